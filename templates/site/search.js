/* The site's search (public/search.js, for search.html only): reads the static index in
   search/ that newsletter/publish/search_index.py writes, and ranks as
   newsletter/publish/search_text.py does: its terms are made line for line alike, and its
   order is the same (score, votes, the later day, the earlier document). Results
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

  /* What the index says, decoded once and kept for the page's life: a query reuses the
     postings of terms it shares with earlier ones, and per document its votes, day and
     place in typed arrays, so ranking a term found in every paper allocates little. */
  var layout = null;

  function load() {
    if (!layout) {
      layout = get('index.json').then(function (index) {
        var offsets = [], total = 0;
        index.segments.forEach(function (s) { offsets.push(total); total += s[1]; });
        return {
          index: index, offsets: offsets, total: total, terms: {}, segments: {},
          votes: new Int32Array(total), date: new Int32Array(total), dayOf: new Int32Array(total),
          paper: new Int32Array(total),
          days: [], starts: [], versions: []
        };
      });
    }
    return layout;
  }

  /* A term's documents over the whole archive, ascending, and whether each holds it in
     its heading; segs: the segments where it occurs. */
  function postings(L, term) {
    if (!L.terms[term]) {
      var segments = L.index.segments;
      L.terms[term] = Promise.all(segments.map(function (s) {
        return get(s[0] + '/' + shardOf(term, L.index.shards) + '.json?v=' + s[2]);
      })).then(function (shards) {
        var size = 0, segs = [];
        shards.forEach(function (shard, k) { if (shard && shard[term]) { segs.push(k); size += shard[term].length; } });
        var docs = new Int32Array(size), head = new Uint8Array(size), n = 0;
        segs.forEach(function (k) {
          var encoded = shards[k][term], doc = L.offsets[k];
          for (var i = 0; i < encoded.length; i++, n++) {
            doc += encoded[i] >> 1;
            docs[n] = doc;
            head[n] = encoded[i] & 1;
          }
        });
        return {docs: docs, head: head, segs: segs};
      });
    }
    return L.terms[term];
  }

  /* Fill the per-document arrays from a segment's docs.json (once). */
  function segment(L, k) {
    if (!L.segments[k]) {
      var s = L.index.segments[k];
      L.segments[k] = get(s[0] + '/docs.json?v=' + s[2]).then(function (docs) {
        var doc = L.offsets[k];
        docs.votes.forEach(function (v, i) { L.votes[doc + i] = v; });
        // A paper listed on several days: each listing names its first (plus one; 0: once).
        (docs.same || []).forEach(function (pair) {
          L.paper[doc + pair[0]] = L.paper[doc + pair[1]] = doc + pair[1] + 1;
        });
        docs.days.forEach(function (row) {
          var at = L.days.length, date = parseInt(row[0].replace(/-/g, ''), 10);
          L.days.push(row[0]); L.starts.push(doc); L.versions.push(s[2]);
          for (var p = 0; p < row[1]; p++, doc++) { L.date[doc] = date; L.dayOf[doc] = at; }
        });
      });
    }
    return L.segments[k];
  }

  /* Every document holding all the query's terms, with its score: {L, docs, scores, n}. */
  async function find(query) {
    var L = await load();
    var wanted = [];
    queryWords(query).forEach(function (w) { w[1].forEach(function (t) { if (wanted.indexOf(t) < 0) wanted.push(t); }); });
    var none = {L: L, docs: new Int32Array(0), scores: new Float64Array(0), n: 0};
    if (!wanted.length) return none;
    var lists = await Promise.all(wanted.map(function (t) { return postings(L, t); }));
    if (lists.some(function (l) { return l.docs.length === 0; })) return none;
    var useful = lists[0].segs.filter(function (k) { return lists.every(function (l) { return l.segs.indexOf(k) >= 0; }); });
    await Promise.all(useful.map(function (k) { return segment(L, k); }));
    return intersect(L, lists);
  }

  /* The first place at or after from where list holds doc or more (galloping). */
  function seek(list, from, doc) {
    var step = 1, hi = from;
    while (hi < list.length && list[hi] < doc) { from = hi + 1; hi += step; step *= 2; }
    if (hi > list.length) hi = list.length;
    while (from < hi) { var mid = (from + hi) >> 1; if (list[mid] < doc) from = mid + 1; else hi = mid; }
    return from;
  }

  function intersect(L, lists) {
    var smallest = 0;
    lists.forEach(function (l, i) { if (l.docs.length < lists[smallest].docs.length) smallest = i; });
    var idf = lists.map(function (l) { return Math.log(1 + L.total / l.docs.length); });
    var at = lists.map(function () { return 0; }), m = lists.length;
    var from = lists[smallest].docs, docs = new Int32Array(from.length), scores = new Float64Array(from.length), n = 0;
    next: for (var d = 0; d < from.length; d++) {
      var doc = from[d];
      for (var i = 0; i < m; i++) {
        if (i === smallest) { at[i] = d; continue; }
        at[i] = seek(lists[i].docs, at[i], doc);
        if (at[i] >= lists[i].docs.length) break next;
        if (lists[i].docs[at[i]] !== doc) continue next;
      }
      var score = 0;
      for (i = 0; i < m; i++) score += idf[i] * (lists[i].head[at[i]] ? FIELD_WEIGHT : 1);
      docs[n] = doc;
      scores[n++] = Math.round(score * 1e6) / 1e6;
    }
    return {L: L, docs: docs, scores: scores, n: n};
  }

  /* How many papers the matches are: a paper listed on two days is shown, and counted,
     once. */
  function papers(found) {
    var L = found.L, once = 0, several = new Set();
    for (var i = 0; i < found.n; i++) {
      var paper = L.paper[found.docs[i]];
      if (paper) several.add(paper); else once++;
    }
    return once + several.size;
  }

  /* Whether match a ranks before match b: score, then votes, then the later day. */
  function before(found, a, b) {
    var L = found.L, x = found.docs[a], y = found.docs[b];
    if (found.scores[a] !== found.scores[b]) return found.scores[a] > found.scores[b];
    if (L.votes[x] !== L.votes[y]) return L.votes[x] > L.votes[y];
    if (L.date[x] !== L.date[y]) return L.date[x] > L.date[y];
    return x < y;
  }

  /* The k best matches, best first (documents): a bounded heap, worst on top, rather than
     sorting every match when only a page is shown. */
  function top(found, k) {
    var heap = [], i, j, c;
    function down(p) {
      for (;;) {
        var worst = p, l = 2 * p + 1, r = l + 1;
        if (l < heap.length && before(found, heap[worst], heap[l])) worst = l;
        if (r < heap.length && before(found, heap[worst], heap[r])) worst = r;
        if (worst === p) return;
        c = heap[p]; heap[p] = heap[worst]; heap[worst] = c; p = worst;
      }
    }
    for (i = 0; i < found.n; i++) {
      if (heap.length < k) {
        heap.push(i);
        for (j = heap.length - 1; j > 0 && before(found, heap[(j - 1) >> 1], heap[j]); j = (j - 1) >> 1) {
          c = heap[j]; heap[j] = heap[(j - 1) >> 1]; heap[(j - 1) >> 1] = c;
        }
      } else if (k > 0 && before(found, i, heap[0])) {
        heap[0] = i;
        down(0);
      }
    }
    heap.sort(function (a, b) { return before(found, a, b) ? -1 : 1; });
    return heap.map(function (m) { return found.docs[m]; });
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

  var dates = null;  // one formatter for every result: making one is slow
  var plurals = null, numbers = null;

  /* "1 vote", "2 votes", "1,234 votes": the page gives each form with {n} in it. */
  function counted(one, other, n) {
    try {
      plurals = plurals || new Intl.PluralRules(document.documentElement.lang);
      numbers = numbers || new Intl.NumberFormat(document.documentElement.lang);
      return (plurals.select(n) === 'one' ? one : other).replace('{n}', numbers.format(n));
    } catch (e) { return other.replace('{n}', n); }
  }

  function dateLabel(day) {
    try {
      dates = dates || new Intl.DateTimeFormat(document.documentElement.lang, {dateStyle: 'long', timeZone: 'UTC'});
      return dates.format(new Date(day + 'T00:00:00Z'));
    } catch (e) { return day; }
  }

  function hitNode(entry, day, query) {
    var item = el('li', {'class': 'paper'});
    var heading = el('h2');
    heading.appendChild(el('a', {href: D.site + 'days/' + day + D.suffix}, entry[1]));
    item.appendChild(heading);
    var meta = el('p', {'class': 'meta'}, dateLabel(day) + ' · ');
    meta.appendChild(el('span', {'class': 'votes'}, counted(D.votesOne, D.votes, entry[3])));
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

  /* Show count more papers, each once (its best showing); the ranking grows as pages are
     asked for. */
  async function show(count) {
    var s = state, L = s.found.L, shown = [];
    while (shown.length < count && s.next < s.found.n) {
      var want = s.next + count - shown.length;
      if (s.order.length < want) s.order = top(s.found, Math.max(want, 2 * s.order.length));
      var batch = s.order.slice(s.next, want);
      s.next += batch.length;
      var rows = await Promise.all(batch.map(function (doc) {
        return get('days/' + L.days[L.dayOf[doc]] + '.json?v=' + L.versions[L.dayOf[doc]]);
      }));
      batch.forEach(function (doc, i) {
        var entry = rows[i] && rows[i][doc - L.starts[L.dayOf[doc]]];
        if (entry && !s.seen.has(entry[0])) { s.seen.add(entry[0]); shown.push([entry, L.days[L.dayOf[doc]]]); }
      });
    }
    if (s !== state) return;
    shown.forEach(function (hit) { list.appendChild(hitNode(hit[0], hit[1], s.query)); });
    more.hidden = s.next >= s.found.n;
  }

  async function run(query) {
    var started = performance.now();
    state = {query: query, found: null, order: [], next: 0, seen: new Set()};
    var mine = state;
    list.textContent = '';
    more.hidden = true;
    try {
      mine.found = await find(query);
      if (mine !== state) return;
      await show(PAGE);
      if (mine !== state) return;
      var n = papers(mine.found);
      status.textContent = n ? counted(D.foundOne, D.found, n).replace('{q}', query) : D.none.replace('{q}', query);
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
