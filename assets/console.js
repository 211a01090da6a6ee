// farmhand console: keeps a server-rendered page current. No framework, no
// build step. The page is complete without this script; with it, the parts
// marked data-live are re-fetched from the server and swapped in when
// /events says something changed (or, without an event stream, every 2 s
// while a build runs and every 10 s when idle), running logs are followed,
// and relative times tick. Nothing runs while the tab is hidden.
(function () {
  'use strict';

  var BUSY_MS = 2000;
  var IDLE_MS = 10000;
  var SSE_RETRY_MS = 60000;
  var EVENTS = ['build', 'poll', 'queue', 'control', 'reload', 'resync'];

  var body = document.body;
  var skew = 0; // server clock minus ours, from data-now
  var lastUpdate = Date.now();
  var reachable = true;
  var timer = null;
  var pending = null; // the refresh under way
  var es = null;
  var esOpen = false;
  var esRetry = null;
  var esOpenedOnce = false;
  var following = []; // <pre>s whose log is being streamed

  function hidden() { return document.visibilityState === 'hidden'; }
  function building() { return body.getAttribute('data-building') === '1'; }
  function now() { return Date.now() + skew; }

  function readSkew(b) {
    var n = parseInt(b.getAttribute('data-now'), 10);
    if (!isNaN(n)) { skew = n - Date.now(); }
  }

  // The same words as the server's templates::duration.
  function duration(secs) {
    secs = Math.max(0, secs);
    if (secs < 10) { return secs.toFixed(1) + ' s'; }
    var s = Math.round(secs);
    if (s < 60) { return s + ' s'; }
    if (s < 3600) { return Math.floor(s / 60) + ' min ' + (s % 60) + ' s'; }
    if (s < 86400) { return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min'; }
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  // The same words as templates::whole: whole seconds.
  function whole(secs) {
    secs = Math.max(0, Math.floor(secs));
    return secs < 10 ? secs + ' s' : duration(secs);
  }

  function relative(t) {
    var d = (t - now()) / 1000;
    if (d >= 1) { return 'in ' + whole(d); }
    if (d > -1) { return 'now'; }
    return whole(-d) + ' ago';
  }

  // Ticks every relative time, elapsed time and progress bar.
  function tick() {
    var list, i, el, t;
    list = document.querySelectorAll('time[data-since]');
    for (i = 0; i < list.length; i++) {
      t = Date.parse(list[i].getAttribute('datetime'));
      if (!isNaN(t)) { list[i].textContent = whole((now() - t) / 1000); }
    }
    list = document.querySelectorAll('time[data-rel], time[data-countdown]');
    for (i = 0; i < list.length; i++) {
      t = Date.parse(list[i].getAttribute('datetime'));
      if (!isNaN(t)) { list[i].textContent = relative(t); }
    }
    el = document.getElementById('in-flight-progress');
    var since = document.querySelector('#in-flight time[data-since]');
    if (el && since) {
      var elapsed = (now() - Date.parse(since.getAttribute('datetime'))) / 1000;
      var max = parseFloat(el.getAttribute('max'));
      el.value = Math.min(elapsed, max);
      if (elapsed > max * 1.2 && !el.parentNode.querySelector('.overdue')) {
        var badge = document.createElement('span');
        badge.className = 'badge overdue';
        badge.textContent = 'overdue';
        el.parentNode.insertBefore(badge, el);
        el.parentNode.insertBefore(document.createTextNode(' '), el);
      }
    }
    showUpdated();
  }

  function showUpdated() {
    var el = document.getElementById('live-state');
    if (!el) { return; }
    var ago = whole((Date.now() - lastUpdate) / 1000);
    if (hidden()) {
      el.textContent = 'Paused while hidden · updated ' + ago + ' ago';
    } else if (!reachable) {
      el.textContent = 'Daemon unreachable · last update ' + ago + ' ago';
    } else {
      el.textContent = (esOpen ? 'Live' : 'Polling') + ' · updated ' + ago + ' ago';
    }
  }

  function setReachable(ok) {
    reachable = ok;
    var banner = document.getElementById('banner');
    if (banner) { banner.hidden = ok; }
    if (ok) { lastUpdate = Date.now(); }
    showUpdated();
  }

  // --- logs ---------------------------------------------------------------

  function atBottom(pre) {
    return pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  }

  function lastLines(text, n) {
    var i = text.length;
    var count = 0;
    if (text.charAt(i - 1) === '\n') { i--; }
    while (i > 0) {
      i = text.lastIndexOf('\n', i - 1);
      if (i < 0) { return text; }
      if (++count >= n) { return text.slice(i + 1); }
    }
    return text;
  }

  // Streams a running build's log into its <pre> (textContent: never
  // parsed as markup), keeping the reader at the bottom unless they
  // scrolled up. At the end of the build the page is refreshed.
  function follow(pre) {
    if (!pre || !pre.getAttribute('data-follow') || pre.farmhandFollow || hidden()) { return; }
    if (!window.fetch || !window.ReadableStream || !window.TextDecoder) { return; }
    var ctrl = new AbortController();
    pre.farmhandFollow = ctrl;
    following.push(pre);
    var tail = parseInt(pre.getAttribute('data-tail') || '0', 10) || 5000;
    fetch(pre.getAttribute('data-follow'), { signal: ctrl.signal, cache: 'no-store' })
      .then(function (r) {
        if (!r.ok || !r.body) { throw new Error('HTTP ' + r.status); }
        var reader = r.body.getReader();
        var dec = new TextDecoder();
        var text = '';
        function pump() {
          return reader.read().then(function (c) {
            if (c.done) {
              pre.farmhandFollow = null;
              pre.removeAttribute('data-follow');
              refreshSoon(100);
              return;
            }
            text = lastLines(text + dec.decode(c.value, { stream: true }), tail);
            var bottom = atBottom(pre);
            pre.textContent = text;
            if (bottom) { pre.scrollTop = pre.scrollHeight; }
            setReachable(true);
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { pre.farmhandFollow = null; });
  }

  function stopFollowing() {
    for (var i = 0; i < following.length; i++) {
      if (following[i].farmhandFollow) { following[i].farmhandFollow.abort(); following[i].farmhandFollow = null; }
    }
    following = [];
  }

  function followAll() {
    var list = document.querySelectorAll('pre.log');
    for (var i = 0; i < list.length; i++) {
      if (!list[i].farmhandScrolled) { list[i].scrollTop = list[i].scrollHeight; list[i].farmhandScrolled = true; }
      follow(list[i]);
    }
  }

  // --- refreshing ---------------------------------------------------------

  // Swaps every data-live part of the page for the fresh one; a log being
  // followed stays (with its scroll position) while it is the same build's.
  function swap(html) {
    var doc = new DOMParser().parseFromString(html, 'text/html');
    var parts = document.querySelectorAll('[data-live][id]');
    for (var i = 0; i < parts.length; i++) {
      var old = parts[i];
      var fresh = doc.getElementById(old.id);
      if (!fresh) { continue; }
      var logs = old.querySelectorAll('pre.log');
      for (var j = 0; j < logs.length; j++) {
        var keep = logs[j];
        var next = fresh.querySelector('#' + keep.id);
        if (next && next.getAttribute('data-build') === keep.getAttribute('data-build') &&
            (keep.farmhandFollow || !atBottom(keep))) {
          next.parentNode.replaceChild(keep, next);
        }
      }
      old.parentNode.replaceChild(document.adoptNode(fresh), old);
    }
    // Logs that left the page are followed no more.
    following = following.filter(function (pre) {
      if (document.body.contains(pre)) { return true; }
      if (pre.farmhandFollow) { pre.farmhandFollow.abort(); pre.farmhandFollow = null; }
      return false;
    });
    body.setAttribute('data-building', doc.body.getAttribute('data-building') || '0');
    readSkew(doc.body);
    var title = doc.querySelector('title');
    if (title) { document.title = title.textContent; }
    applyFilter();
    followAll();
    Control.refresh();
    tick();
  }

  function refresh() {
    clearTimeout(timer);
    timer = null;
    if (hidden() || pending) { return; }
    pending = fetch(location.pathname + location.search, {
      headers: { Accept: 'text/html' },
      cache: 'no-store'
    }).then(function (r) {
      if (r.status >= 500) { throw new Error('HTTP ' + r.status); }
      return r.text();
    }).then(function (html) {
      swap(html);
      setReachable(true);
    }).catch(function () {
      setReachable(false);
    }).then(function () {
      pending = null;
      schedule();
    });
  }

  function refreshSoon(ms) {
    if (hidden()) { return; }
    clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  // The next poll, unless the event stream tells us when to refresh.
  function schedule() {
    if (hidden() || pending) { return; }
    if (esOpen && reachable) { return; }
    if (timer === null) { timer = setTimeout(refresh, building() ? BUSY_MS : IDLE_MS); }
  }

  // --- the event stream -----------------------------------------------------

  function connect() {
    if (es || hidden() || !window.EventSource) { return; }
    clearTimeout(esRetry);
    es = new EventSource('/events');
    es.onopen = function () {
      // After a reconnect the page may have missed changes: catch up.
      if (esOpenedOnce) { refreshSoon(0); }
      esOpenedOnce = true;
      esOpen = true;
      clearTimeout(timer);
      timer = null;
      setReachable(true);
    };
    var onEvent = function () {
      lastUpdate = Date.now();
      refreshSoon(250);
    };
    for (var i = 0; i < EVENTS.length; i++) { es.addEventListener(EVENTS[i], onEvent); }
    es.onerror = function () {
      var wasOpen = esOpen;
      esOpen = false;
      if (es.readyState === 2) {
        // No event stream here (or it refused us): poll, and try again later.
        es.close();
        es = null;
        esRetry = setTimeout(connect, SSE_RETRY_MS);
      } else if (wasOpen) {
        // Reconnecting: the daemon went away; polling shows the banner.
        refreshSoon(0);
      }
      schedule();
    };
  }

  function disconnect() {
    clearTimeout(esRetry);
    if (es) { es.close(); es = null; }
    esOpen = false;
  }

  function onVisibility() {
    if (hidden()) {
      clearTimeout(timer);
      timer = null;
      disconnect();
      stopFollowing();
      showUpdated();
    } else {
      refresh();
      connect();
      followAll();
    }
  }

  // --- the recipe filter --------------------------------------------------

  function applyFilter() {
    var input = document.getElementById('filter');
    if (!input) { return; }
    var q = input.value.trim().toLowerCase();
    var rows = document.querySelectorAll('table.recipes tbody tr');
    var shown = 0;
    for (var i = 0; i < rows.length; i++) {
      var id = (rows[i].getAttribute('data-recipe') || '').toLowerCase();
      rows[i].hidden = q !== '' && id.indexOf(q) < 0;
      if (!rows[i].hidden) { shown++; }
    }
    var count = document.getElementById('recipe-count');
    if (count && q !== '') { count.textContent = shown + ' shown of the listed recipes'; }
  }

  function initFilter() {
    var input = document.getElementById('filter');
    if (!input) { return; }
    input.addEventListener('input', function () {
      applyFilter();
      // Keep the filter in the address, so refreshes and reloads use it.
      var url = new URL(location.href);
      if (input.value.trim() === '') { url.searchParams.delete('filter'); } else { url.searchParams.set('filter', input.value.trim()); }
      history.replaceState(null, '', url.pathname + url.search + url.hash);
    });
  }

  // --- control actions ------------------------------------------------------

  // The control API (DESIGN.md section 15) hooks in here: a token field in
  // #control, kept in sessionStorage and sent as the Authorization header by
  // fetch, and buttons on the rows that carry data-recipe, data-build and
  // data-failure. refresh() is called after every swap so the buttons can
  // be put back on the fresh rows.
  var Control = { init: function () {}, refresh: function () {} };

  // --- start ------------------------------------------------------------------

  readSkew(body);
  initFilter();
  applyFilter();
  Control.init();
  document.addEventListener('visibilitychange', onVisibility);
  setInterval(tick, 1000);
  tick();
  followAll();
  connect();
  schedule();
})();
