/* The site's search (public/search.js, for search.html only): reads the static index in
   search/ that newsletter/publish/search_index.py writes, and ranks as
   newsletter/publish/search_text.py does; the two are kept line for line alike. Results
   are built with textContent only, so nothing a query or a summary holds is ever markup. */
(function () {
  'use strict';
  var root = document.getElementById('search-results');
  if (!root || !window.fetch) return;
  var D = root.dataset;
  var WORD = /[a-z0-9]+(?:\.[0-9]+)*|[\uac00-\ud7a3]+/g;
  var HANGUL = /^[\uac00-\ud7a3]/;
  var FIELD_WEIGHT = 3, SNIPPET_CHARS = 160, PAGE = 20;
  var cache = {};

  function normal(text) { return text.normalize('NFKC').toLowerCase(); }

  function ends(word, suffix) { return word.slice(-suffix.length) === suffix; }

  function stem(word) {
    if (!/^[a-z]+$/.test(word)) return word;
    if (ends(word, 'ies') && word.length > 4) word = word.slice(0, -3) + 'y';
    else if (ends(word, 'sses')) word = word.slice(0, -2);
    else if (ends(word, 's') && word.length > 3 && !/(ss|us|is)$/.test(word)) word = word.slice(0, -1);
    if (ends(word, 'ing') && word.length > 5) word = word.slice(0, -3);
    else if (ends(word, 'ed') && word.length > 4) word = word.slice(0, -2);
    if (ends(word, 'e') && word.length > 4) word = word.slice(0, -1);
    return word;
  }

  function wordTerms(word) {
    if (!HANGUL.test(word)) return [stem(word)];
    if (word.length === 1) return [word];
    var out = [];
    for (var i = 0; i < word.length - 1; i++) out.push(word.slice(i, i + 2));
    return out;
  }

  function queryWords(query) {
    return (normal(query).match(WORD) || []).map(function (w) { return [w, wordTerms(w)]; });
  }

  function shardOf(term, shards) {
    var h = 0x811c9dc5;
    for (var i = 0; i < term.length; i++) h = Math.imul(h ^ term.charCodeAt(i), 0x01000193) >>> 0;
    return h % shards;
  }

  function get(path) {
    if (!cache[path]) {
      cache[path] = fetch(D.index + path).then(function (r) {
        if (r.status === 404) return null;
        if (!r.ok) throw new Error(path + ': ' + r.status);
        return r.json();
      });
    }
    return cache[path];
  }

  function decode(encoded, offset, into) {
    var doc = 0;
    for (var i = 0; i < encoded.length; i++) {
      doc += encoded[i] >> 1;
      into.set(offset + doc, (encoded[i] & 1) === 1);
    }
  }

  /* Every document holding all the query's terms, best first: [doc, score] pairs, and
     where each document is (its day and place in the day's file). */
  async function find(query) {
    var index = await get('index.json');
    var wanted = [];
    queryWords(query).forEach(function (w) { w[1].forEach(function (t) { if (wanted.indexOf(t) < 0) wanted.push(t); }); });
    if (!wanted.length) return [];
    var segments = index.segments, total = 0, offsets = [];
    segments.forEach(function (s) { offsets.push(total); total += s[1]; });
    var shards = await Promise.all(segments.map(function (s) {
      return Promise.all(wanted.map(function (t) { return get(s[0] + '/' + shardOf(t, index.shards) + '.json?v=' + s[2]); }));
    }));
    var lists = wanted.map(function () { return new Map(); });
    var useful = [];
    segments.forEach(function (s, k) {
      var all = true;
      wanted.forEach(function (t, j) {
        var found = shards[k][j] && shards[k][j][t];
        if (found) decode(found, offsets[k], lists[j]); else all = false;
      });
      if (all) useful.push(k);
    });
    if (lists.some(function (l) { return l.size === 0; })) return [];
    var docs = await Promise.all(useful.map(function (k) { return get(segments[k][0] + '/docs.json?v=' + segments[k][2]); }));
    var info = new Map();
    useful.forEach(function (k, i) {
      var doc = offsets[k];
      docs[i].days.forEach(function (row) {
        for (var p = 0; p < row[1]; p++, doc++) info.set(doc, [row[0], p, docs[i].votes[doc - offsets[k]], segments[k][2]]);
      });
    });
    return rank(lists, total, info);
  }

  function rank(lists, total, info) {
    var smallest = lists.reduce(function (a, b) { return b.size < a.size ? b : a; });
    var scores = [];
    smallest.forEach(function (_flag, doc) {
      var score = 0;
      for (var i = 0; i < lists.length; i++) {
        if (!lists[i].has(doc)) return;
        score += Math.log(1 + total / lists[i].size) * (lists[i].get(doc) ? FIELD_WEIGHT : 1);
      }
      scores.push([doc, Math.round(score * 1e6) / 1e6, info.get(doc)]);
    });
    scores.sort(function (a, b) {
      return b[1] - a[1] || b[2][2] - a[2][2] || (a[2][0] < b[2][0] ? 1 : a[2][0] > b[2][0] ? -1 : 0) || a[0] - b[0];
    });
    return scores;
  }

  function snippet(text, query) {
    var marks = queryWords(query).map(function (w) { return HANGUL.test(w[0]) ? w[0] : w[1][0]; });
    marks = marks.filter(function (w, i) { return marks.indexOf(w) === i; }).sort(function (a, b) { return b.length - a.length; });
    var lowered = normal(text);
    if (lowered.length !== text.length) lowered = text.toLowerCase();
    var first = -1;
    marks.forEach(function (w) { var i = lowered.indexOf(w); if (i >= 0 && (first < 0 || i < first)) first = i; });
    var start = Math.max(0, (first < 0 ? 0 : first) - SNIPPET_CHARS / 4);
    var end = Math.min(text.length, start + SNIPPET_CHARS);
    var cut = lowered.slice(start, end), on = [];
    marks.forEach(function (w) {
      for (var i = cut.indexOf(w); i >= 0 && w; i = cut.indexOf(w, i + w.length)) for (var k = i; k < i + w.length; k++) on[k] = true;
    });
    return {text: text.slice(start, end), on: on, before: start > 0, after: end < text.length};
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function snippetNode(entry, query) {
    var cut = snippet(entry[4], query), p = el('p', {'class': 'snip', lang: 'ko'});
    if (cut.before) p.appendChild(document.createTextNode('…'));
    var run = '', marked = false;
    function flush() {
      if (run) p.appendChild(marked ? el('mark', {}, run) : document.createTextNode(run));
      run = '';
    }
    for (var i = 0; i < cut.text.length; i++) {
      if (!!cut.on[i] !== marked) { flush(); marked = !!cut.on[i]; }
      run += cut.text[i];
    }
    flush();
    if (cut.after) p.appendChild(document.createTextNode('…'));
    return p;
  }

  function dateLabel(day) {
    try {
      return new Intl.DateTimeFormat(document.documentElement.lang, {dateStyle: 'long', timeZone: 'UTC'}).format(new Date(day + 'T00:00:00Z'));
    } catch (e) { return day; }
  }

  function hitNode(entry, day, query) {
    var item = el('li', {'class': 'paper'});
    var heading = el('h2');
    heading.appendChild(el('a', {href: D.site + 'days/' + day + D.suffix}, entry[1]));
    item.appendChild(heading);
    var meta = el('p', {'class': 'meta'}, dateLabel(day) + ' · ');
    meta.appendChild(el('span', {'class': 'votes'}, D.votes.replace('{n}', entry[3])));
    item.appendChild(meta);
    if (entry[2]) item.appendChild(el('p', {'class': 'meta'}, entry[2].length > 200 ? entry[2].slice(0, 199) + '…' : entry[2]));
    item.appendChild(snippetNode(entry, query));
    var links = el('p', {'class': 'links'});
    links.appendChild(el('a', {href: D.site + 'days/' + day + D.suffix}, D.day));
    links.appendChild(document.createTextNode(' · '));
    links.appendChild(el('a', {href: 'https://arxiv.org/abs/' + entry[0]}, 'arXiv ' + entry[0]));
    links.appendChild(document.createTextNode(' · '));
    links.appendChild(el('a', {href: 'https://huggingface.co/papers/' + entry[0]}, 'Hugging Face'));
    item.appendChild(links);
    return item;
  }

  var list = document.getElementById('search-list');
  var status = document.getElementById('search-status');
  var more = document.getElementById('search-more');
  var state = null;

  async function show(count) {
    var s = state, shown = [];
    while (shown.length < count && s.next < s.ranked.length) {
      var batch = s.ranked.slice(s.next, s.next + count - shown.length);
      s.next += batch.length;
      var rows = await Promise.all(batch.map(function (r) { return get('days/' + r[2][0] + '.json?v=' + r[2][3]); }));
      batch.forEach(function (r, i) {
        var entry = rows[i] && rows[i][r[2][1]];
        if (entry && !s.seen.has(entry[0])) { s.seen.add(entry[0]); shown.push([entry, r[2][0]]); }
      });
    }
    if (s !== state) return;
    shown.forEach(function (hit) { list.appendChild(hitNode(hit[0], hit[1], s.query)); });
    more.hidden = s.next >= s.ranked.length;
  }

  async function run(query) {
    var started = performance.now();
    state = {query: query, ranked: [], next: 0, seen: new Set()};
    var mine = state;
    list.textContent = '';
    more.hidden = true;
    try {
      mine.ranked = await find(query);
      if (mine !== state) return;
      await show(PAGE);
      if (mine !== state) return;
      var n = mine.ranked.length;
      status.textContent = n ? D.found.replace('{n}', n).replace('{q}', query) : D.none.replace('{q}', query);
    } catch (e) {
      status.textContent = D.error;
    }
    root.setAttribute('data-done', query);
    root.setAttribute('data-ms', String(Math.round((performance.now() - started) * 10) / 10));
  }

  var form = document.getElementById('search-form');
  var input = document.getElementById('search-q');
  document.getElementById('search-nojs').hidden = true;
  more.addEventListener('click', function () { show(PAGE); });
  form.addEventListener('submit', function (event) {
    event.preventDefault();
    var query = input.value.trim();
    history.pushState(null, '', '?q=' + encodeURIComponent(query));
    run(query);
  });
  window.addEventListener('popstate', function () {
    input.value = new URLSearchParams(location.search).get('q') || '';
    run(input.value.trim());
  });
  var initial = (new URLSearchParams(location.search).get('q') || '').trim();
  input.value = initial;
  if (initial) run(initial); else root.setAttribute('data-done', '');
})();
