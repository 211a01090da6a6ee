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
    Control.expire();
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
    var focus = Control.focused();
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
    Control.refresh(focus);
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

  // The control API (DESIGN.md section 15) from the page. The token is
  // typed into the form this makes in #control, kept in this tab's
  // sessionStorage (never in a cookie, so no other site can make the
  // browser act) and sent by fetch as the Authorization header. The server
  // marks where actions apply with empty, hidden elements carrying
  // data-control (the target's URL), data-actions and data-name; with a
  // token this fills them with buttons. Each answer is shown next to its
  // buttons, and kept across refreshes for a minute; the latest one is also
  // said in #control (a live region), where it stays when its row leaves
  // the page (a cancelled build, a retried failure). The page itself then
  // changes from /events as usual.
  var Control = (function () {
    var KEY = 'farmhand.control-token';
    var KEEP_MS = 60000;
    var LABELS = {
      poll: 'Poll now', pause: 'Pause', resume: 'Resume',
      cancel: 'Cancel build', retry: 'Retry now'
    };
    var WHY = {
      401: 'wrong token', 403: 'control is off', 404: 'not found',
      409: 'refused', 503: 'unavailable'
    };
    var memory = null; // the token, when sessionStorage is unavailable
    var answers = {}; // data-control -> {text, error, at}
    var sending = {}; // data-control -> true while a request is out
    var slot = null;

    function token() {
      try { return window.sessionStorage.getItem(KEY) || memory; } catch (e) { return memory; }
    }

    function keep(t) {
      memory = null;
      try {
        if (t) { window.sessionStorage.setItem(KEY, t); } else { window.sessionStorage.removeItem(KEY); }
      } catch (e) { memory = t; }
    }

    function el(tag, attrs, text) {
      var e = document.createElement(tag);
      for (var k in attrs) { if (Object.prototype.hasOwnProperty.call(attrs, k)) { e.setAttribute(k, attrs[k]); } }
      if (text) { e.textContent = text; }
      return e;
    }

    // The token form, and what shows instead once a token is kept.
    function makeForm() {
      var place = document.getElementById('control');
      // No form where the control API is off: every request would be 403.
      if (!place || !window.fetch || document.body.getAttribute('data-control') !== 'on') { return; }
      slot = place;
      var form = el('form', { id: 'control-form', 'class': 'control-form', 'aria-label': 'Control' });
      form.appendChild(el('label', { 'for': 'control-token' }, 'Control token'));
      // No name: the token never goes into a URL, even if the form were
      // submitted the ordinary way.
      form.appendChild(el('input', {
        id: 'control-token', type: 'password', autocomplete: 'off',
        spellcheck: 'false', size: '18', required: ''
      }));
      form.appendChild(el('button', { type: 'submit' }, 'Use token'));
      var on = el('p', { id: 'control-on', 'class': 'control-on' });
      on.appendChild(el('span', {}, 'Control on'));
      on.appendChild(document.createTextNode(' '));
      on.appendChild(el('button', { type: 'button', id: 'control-forget' }, 'Forget token'));
      slot.appendChild(form);
      slot.appendChild(on);
      slot.appendChild(el('p', { id: 'control-said', 'class': 'control-said', role: 'status', hidden: '' }));
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var input = document.getElementById('control-token');
        var t = input.value.trim();
        input.value = '';
        if (t === '') { return; }
        keep(t);
        answers = {};
        refresh();
        document.getElementById('control-forget').focus();
      });
      document.getElementById('control-forget').addEventListener('click', function () {
        keep(null);
        answers = {};
        say('', false);
        refresh();
        document.getElementById('control-token').focus();
      });
      slot.hidden = false;
    }

    function places() {
      return document.querySelectorAll('[data-control][data-actions]');
    }

    function placesOf(base) {
      var all = places();
      var out = [];
      for (var i = 0; i < all.length; i++) {
        if (all[i].getAttribute('data-control') === base) { out.push(all[i]); }
      }
      return out;
    }

    // Pause and resume take one place: after a pause, focus moves to resume.
    function slotOf(action) { return action === 'resume' ? 'pause' : action; }

    function showAnswer(place) {
      var out = place.querySelector('.control-answer');
      if (!out) { return; }
      var base = place.getAttribute('data-control');
      var a = answers[base];
      if (sending[base]) {
        out.className = 'control-answer sending';
        out.textContent = 'Sending…';
      } else if (a && Date.now() - a.at < KEEP_MS) {
        out.className = 'control-answer ' + (a.error ? 'error' : 'ok');
        out.textContent = a.text;
      } else {
        out.className = 'control-answer';
        out.textContent = '';
      }
      var buttons = place.querySelectorAll('button');
      for (var i = 0; i < buttons.length; i++) {
        // aria-disabled, not disabled: a disabled button would lose focus.
        if (sending[base]) { buttons[i].setAttribute('aria-disabled', 'true'); } else { buttons[i].removeAttribute('aria-disabled'); }
      }
    }

    function fill(place) {
      var base = place.getAttribute('data-control');
      var name = place.getAttribute('data-name') || base;
      var actions = (place.getAttribute('data-actions') || '').split(' ');
      place.textContent = '';
      for (var i = 0; i < actions.length; i++) {
        var action = actions[i];
        if (!LABELS[action]) { continue; }
        var b = el('button', {
          type: 'button', 'class': 'act act-' + action, 'data-act': action,
          'aria-label': LABELS[action] + ' (' + name + ')'
        }, LABELS[action]);
        place.appendChild(b);
        place.appendChild(document.createTextNode(' '));
      }
      place.appendChild(el('span', { 'class': 'control-answer' }));
      showAnswer(place);
    }

    // What has focus among the buttons, to give it back after a swap.
    function focused() {
      var a = document.activeElement;
      if (!a || !a.getAttribute || !a.getAttribute('data-act')) { return null; }
      var place = a.parentNode;
      return { base: place.getAttribute('data-control'), slot: slotOf(a.getAttribute('data-act')) };
    }

    // Shows the form or the buttons; `focus` is what focused() said
    // before the page's parts were swapped.
    function refresh(focus) {
      if (!slot) { return; }
      var t = token();
      document.getElementById('control-form').hidden = !!t;
      document.getElementById('control-on').hidden = !t;
      // Every place, and the column headers, show with a token; only the
      // places get buttons.
      var cells = document.querySelectorAll('.actions');
      for (var i = 0; i < cells.length; i++) {
        cells[i].hidden = !t;
        if (cells[i].hasAttribute('data-actions')) {
          if (t) { fill(cells[i]); } else { cells[i].textContent = ''; }
        }
      }
      if (t && focus && (!document.activeElement || document.activeElement === body)) {
        var list = placesOf(focus.base);
        for (var j = 0; j < list.length; j++) {
          var buttons = list[j].querySelectorAll('button');
          for (var k = 0; k < buttons.length; k++) {
            if (slotOf(buttons[k].getAttribute('data-act')) === focus.slot) { buttons[k].focus(); return; }
          }
        }
      }
    }

    // The latest answer, in #control.
    function say(text, error) {
      var p = document.getElementById('control-said');
      if (!p) { return; }
      p.className = 'control-said' + (error ? ' error' : '');
      p.textContent = text;
      p.hidden = text === '';
    }

    function answered(base, label, text, error) {
      delete sending[base];
      say(label + ': ' + text, error);
      answers[base] = { text: text, error: error, at: Date.now() };
      var list = placesOf(base);
      for (var i = 0; i < list.length; i++) { showAnswer(list[i]); }
    }

    function send(base, action, name) {
      var t = token();
      if (!t || sending[base]) { return; }
      var label = LABELS[action] + ' (' + name + ')';
      sending[base] = true;
      var list = placesOf(base);
      for (var i = 0; i < list.length; i++) { showAnswer(list[i]); }
      var status = 0;
      var p;
      try {
        p = fetch(base + '/' + action, {
          method: 'POST',
          headers: { Authorization: 'Bearer ' + t },
          credentials: 'omit',
          cache: 'no-store'
        });
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(function (r) {
        status = r.status;
        return r.text();
      }).then(function (text) {
        text = text.trim();
        if (status >= 200 && status < 300) {
          var message = text;
          try { message = JSON.parse(text).message || text; } catch (e) { /* plain text */ }
          answered(base, label, message, false);
          // The change arrives from /events; without an event stream,
          // this shows it at once.
          refreshSoon(300);
        } else {
          answered(base, label, 'Error ' + status + ' (' + (WHY[status] || 'refused') + '): ' + text, true);
        }
      }).catch(function (e) {
        answered(base, label, status ? 'Error ' + status : 'Error: not sent (' +
          (e && e.message ? e.message : 'the daemon cannot be reached') + ')', true);
      });
    }

    function init() {
      makeForm();
      if (!slot) { return; }
      // One listener for every button, whichever swap made it.
      document.addEventListener('click', function (ev) {
        var b = ev.target.closest ? ev.target.closest('button[data-act]') : null;
        if (!b || !b.parentNode.hasAttribute('data-control')) { return; }
        var place = b.parentNode;
        send(place.getAttribute('data-control'), b.getAttribute('data-act'),
          place.getAttribute('data-name') || place.getAttribute('data-control'));
      });
      refresh();
    }

    // Answers older than KEEP_MS leave the page.
    function expire() {
      var now = Date.now();
      for (var base in answers) {
        if (Object.prototype.hasOwnProperty.call(answers, base) && now - answers[base].at >= KEEP_MS) {
          delete answers[base];
          var list = placesOf(base);
          for (var i = 0; i < list.length; i++) { showAnswer(list[i]); }
        }
      }
    }

    return { init: init, refresh: refresh, focused: focused, expire: expire };
  })();

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
