// The console's only script: while an issue is being sent, its counts on the dashboard
// and on its own page are read again every two seconds from /admin/live.json and written
// into the page, without reloading it. Without this script the page shows the counts as
// they were when it was loaded.
(function () {
  "use strict";
  var box = document.querySelector("[data-live-issue]");
  if (!box || !window.fetch) return;
  var issue = box.getAttribute("data-live-issue");
  var number = new Intl.NumberFormat(document.documentElement.lang || "ko");
  var decimal = new Intl.NumberFormat(document.documentElement.lang || "ko", {maximumFractionDigits: 1});
  var MOVING = ["approved", "sending", "paused"];

  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    seconds = Math.max(0, Math.round(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(s).padStart(2, "0");
  }

  function show(data) {
    box.querySelectorAll("[data-live]").forEach(function (el) {
      var key = el.getAttribute("data-live");
      if (!(key in data)) return;
      var value = data[key];
      if (key === "rate") el.textContent = decimal.format(value || 0);
      else if (key === "seconds_left") el.textContent = clock(value);
      else if (key === "status") el.textContent = el.getAttribute("data-label-" + value) || value;
      else el.textContent = number.format(value || 0);
    });
    box.setAttribute("data-state", data.status || "");
  }

  function poll() {
    fetch("/admin/live.json?issue=" + encodeURIComponent(issue), {credentials: "same-origin", cache: "no-store"})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (data) show(data);
        // A send under way is followed closely; otherwise a send started elsewhere
        // (the CLI, a schedule) still shows up within seconds.
        setTimeout(poll, data && MOVING.indexOf(data.status) >= 0 ? 2000 : 10000);
      })
      .catch(function () { setTimeout(poll, 5000); });
  }
  setTimeout(poll, 2000);
})();
