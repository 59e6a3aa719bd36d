(function () {
  'use strict';
  // Every piece of text goes in with textContent or setAttribute: names come from a configuration
  // file and must show as text, never as markup.
  var SVG = 'http://www.w3.org/2000/svg';
  var LABELS = {
    ok: 'ok', expiring: 'expiring', critical: 'critical', dead: 'dead',
    failed_over: 'failed over', cannot_be_checked: 'cannot be checked'
  };
  var data = null;
  // The server's clock minus ours, so countdowns agree with the server.
  var skew = 0;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function now() { return Date.now() / 1000 + skew; }
  function utc(ts) {
    if (ts === null || ts === undefined) { return '—'; }
    return new Date(ts * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
  }
  function span(sec) {
    sec = Math.max(0, Math.floor(sec));
    var d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600);
    var m = Math.floor(sec % 3600 / 60), s = sec % 60;
    if (d > 0) { return d + 'd ' + h + 'h ' + m + 'm ' + s + 's'; }
    if (h > 0) { return h + 'h ' + m + 'm ' + s + 's'; }
    return m + 'm ' + s + 's';
  }
  function ago(ts) {
    if (ts === null || ts === undefined) { return 'never'; }
    var d = now() - ts;
    return d < 0 ? 'in ' + span(-d) : span(d) + ' ago';
  }
  function leftText(t) {
    if (t.never_expires) { return 'never expires'; }
    if (t.expires_at === null || t.expires_at === undefined) { return 'expiry unknown'; }
    var d = t.expires_at - now();
    return d <= 0 ? 'expired ' + span(-d) + ' ago' : span(d) + ' left';
  }
  function row(dl, term, value, cls) {
    dl.appendChild(el('dt', null, term));
    dl.appendChild(el('dd', cls || null, value));
  }
  function chart(history) {
    var svg = document.createElementNS(SVG, 'svg');
    var n = Math.max(history.length, 1), w = 300, h = 28, gap = 1;
    var bw = Math.max(1, w / n - gap);
    svg.setAttribute('class', 'chart');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    var counts = {};
    history.forEach(function (p, i) {
      counts[p.status] = (counts[p.status] || 0) + 1;
      var r = document.createElementNS(SVG, 'rect');
      var tall = p.status === 'ok' ? 0.45 : p.status === 'warning' ? 0.7 : 1;
      r.setAttribute('x', String(i * (w / n)));
      r.setAttribute('y', String(h * (1 - tall)));
      r.setAttribute('width', String(bw));
      r.setAttribute('height', String(h * tall));
      r.setAttribute('class', String(p.status).replace(/[^a-z_]/g, ''));
      var title = document.createElementNS(SVG, 'title');
      title.textContent = utc(p.at) + ': ' + p.status;
      r.appendChild(title);
      svg.appendChild(r);
    });
    var words = Object.keys(counts).map(function (k) { return counts[k] + ' ' + k; }).join(', ');
    var caption = history.length ? 'last ' + history.length + ' checks: ' + words : 'no check yet';
    svg.setAttribute('aria-label', caption);
    return [svg, el('p', 'chart-caption', caption)];
  }
  function card(t) {
    var state = Object.prototype.hasOwnProperty.call(LABELS, t.state) ? t.state : 'cannot_be_checked';
    var a = el('article', 'token st-' + state);
    var head = el('header');
    head.appendChild(el('h2', 'name', t.name));
    head.appendChild(el('span', 'badge', LABELS[state]));
    a.appendChild(head);
    var role = t.role && t.role.kind === 'backup' ? 'backup of ' + t.role.of : 'primary';
    a.appendChild(el('p', 'meta', [role, t.kind || 'kind unknown', t.fingerprint].join(' · ')));
    var left = el('p', 'left', leftText(t));
    left.setAttribute('data-left', '');
    if (!t.never_expires && t.expires_at !== null && t.expires_at !== undefined && t.expires_at <= now()) {
      left.className = 'left expired';
    }
    a.appendChild(left);
    var dl = el('dl');
    row(dl, 'status', t.status + (t.valid ? ', valid' : ', not valid'));
    if (t.reason) { row(dl, 'why', t.reason, 'missing'); }
    row(dl, 'expires', t.never_expires ? 'never' : utc(t.expires_at));
    if (t.missing_permissions && t.missing_permissions.length) {
      row(dl, 'missing', t.missing_permissions.join(', '), 'missing');
    }
    row(dl, 'permissions', t.scopes && t.scopes.length ? t.scopes.join(', ') : '—');
    row(dl, 'last check', t.last_check ? utc(t.last_check) + ' (' + ago(t.last_check) + ')' : 'not yet');
    row(dl, 'next check', t.next_check ? utc(t.next_check) + ' (' + ago(t.next_check) + ')' : '—');
    a.appendChild(dl);
    chart(t.history || []).forEach(function (e) { a.appendChild(e); });
    a._token = t;
    return a;
  }
  function fmt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
  // What the reader asks for; kept in the address bar so that a link shows the same view.
  var view = { q: '', states: [], page: 1, per_page: 0 };
  var ORDER = ['dead', 'failed_over', 'critical', 'cannot_be_checked', 'expiring', 'ok'];
  function params() {
    var p = [];
    if (view.q) { p.push('q=' + encodeURIComponent(view.q)); }
    if (view.states.length) { p.push('state=' + view.states.join(',')); }
    if (view.page > 1) { p.push('page=' + view.page); }
    if (view.per_page) { p.push('per_page=' + view.per_page); }
    return p.length ? '?' + p.join('&') : '';
  }
  function remember() {
    try { history.replaceState(null, '', location.pathname + params()); } catch (e) { /* file or sandbox */ }
  }
  function chip(state, label, n) {
    var on = state ? view.states.indexOf(state) >= 0 : !view.states.length;
    var b = el('button', state ? 'chip st-' + state : 'chip', label + ' ');
    b.type = 'button';
    b.setAttribute('data-state', state);
    b.setAttribute('aria-pressed', on ? 'true' : 'false');
    b.appendChild(el('span', 'n', fmt(n)));
    return b;
  }
  function render() {
    var tokens = $('tokens');
    var list = data.tokens || [];
    var cards = list.map(card);
    tokens.replaceChildren.apply(tokens, cards);
    var counts = data.counts || {};
    var all = ORDER.reduce(function (s, k) { return s + (counts[k] || 0); }, 0);
    if (!list.length) { tokens.appendChild(el('p', 'empty', all ? 'No token matches.' : 'No token is watched yet.')); }
    var words = Object.keys(LABELS).filter(function (k) { return counts[k]; })
      .map(function (k) { return fmt(counts[k]) + ' ' + LABELS[k]; });
    $('summary').textContent = fmt(all) + (all === 1 ? ' token' : ' tokens') +
      (words.length ? ': ' + words.join(', ') : '') + (data.leader ? '' : ' (standby)') +
      (data.waiting_for_state ? ' — waiting for the state database: ' + data.waiting_for_state : '');
    var chips = $('chips');
    chips.replaceChildren(chip('', 'all', all));
    ORDER.forEach(function (k) { chips.appendChild(chip(k, LABELS[k], counts[k] || 0)); });
    var first = (data.page - 1) * data.per_page + 1;
    $('range').textContent = list.length ?
      fmt(first) + '–' + fmt(first + list.length - 1) + ' of ' + fmt(data.total) : '0 of ' + fmt(data.total);
    $('prev').disabled = view.page <= 1;
    $('next').disabled = view.page >= (data.pages || 1);
    var problem = data.state_unwritable;
    $('unwritable').hidden = !problem;
    $('unwritable').textContent = problem ? 'The state cannot be written since ' + utc(problem.since) +
      ' (' + problem.reason + '): alerts are still delivered; what is decided is recorded once it can be written.' : '';
    var events = $('events');
    events.replaceChildren();
    (data.events || []).slice(0, 50).forEach(function (e) {
      var li = el('li');
      li.appendChild(el('span', 'when', utc(e.at) + ' '));
      li.appendChild(document.createTextNode(e.kind + (e.token ? ' · ' + e.token : '') + ': ' + e.text));
      events.appendChild(li);
    });
    if (!events.children.length) { events.appendChild(el('li', 'empty', 'nothing yet')); }
    var routes = $('routes');
    routes.replaceChildren();
    (data.routes || []).forEach(function (r) {
      var li = el('li', r.failing_since ? 'failing' : null);
      var text = r.name + ': ' + (r.last_result || 'no alert sent yet');
      if (r.failing_since) { text += ' — failing since ' + utc(r.failing_since); }
      li.textContent = text;
      routes.appendChild(li);
    });
    if (!routes.children.length) { routes.appendChild(el('li', 'empty', 'no route configured')); }
    tick();
  }
  function tick() {
    if (!data) { return; }
    var cards = $('tokens').children;
    for (var i = 0; i < cards.length; i++) {
      var t = cards[i]._token;
      var left = cards[i].querySelector('[data-left]');
      if (t && left) { left.textContent = leftText(t); }
    }
    $('updated').textContent = 'Data from ' + utc(data.generated_at) + ' (' + ago(data.generated_at) +
      '); refreshes every 5 s.';
  }
  function take(next) {
    data = next;
    if (typeof next.generated_at === 'number') { skew = next.generated_at - Date.now() / 1000; }
    render();
  }
  // Only the newest request's answer is shown: an older one may arrive after it.
  var asked = 0;
  function refresh() {
    var mine = ++asked;
    fetch('api/tokens' + params(), { cache: 'no-store', credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) { throw new Error('HTTP ' + r.status); }
        return r.json();
      })
      .then(function (next) {
        if (mine !== asked) { return; }
        $('stale').hidden = true;
        // Tokens left the filter while we looked at a late page: go to the last page there is.
        if (!(next.tokens || []).length && next.total > 0 && view.page > next.pages) {
          view.page = next.pages;
          remember();
          refresh();
          return;
        }
        take(next);
      })
      .catch(function () { if (mine === asked) { $('stale').hidden = false; } });
  }
  function go() { remember(); refresh(); }
  var typing = null;
  $('search').addEventListener('input', function () {
    clearTimeout(typing);
    typing = setTimeout(function () {
      view.q = $('search').value.slice(0, 100);
      view.page = 1;
      go();
    }, 250);
  });
  $('chips').addEventListener('click', function (e) {
    var b = e.target.closest ? e.target.closest('button') : null;
    if (!b) { return; }
    var s = b.getAttribute('data-state');
    if (!s) {
      view.states = [];
    } else if (view.states.indexOf(s) >= 0) {
      view.states = view.states.filter(function (k) { return k !== s; });
    } else {
      view.states = ORDER.filter(function (k) { return k === s || view.states.indexOf(k) >= 0; });
    }
    view.page = 1;
    go();
  });
  $('prev').addEventListener('click', function () { if (view.page > 1) { view.page -= 1; go(); } });
  $('next').addEventListener('click', function () {
    if (data && view.page < (data.pages || 1)) { view.page += 1; go(); }
  });
  try {
    var first = JSON.parse($('initial').textContent);
    if (first) {
      // The server read the address bar's query; start from what it understood.
      view.q = first.q || '';
      view.states = (first.states || []).filter(function (k) { return ORDER.indexOf(k) >= 0; });
      view.page = first.page || 1;
      // Sent back only when the link chose it: the server's default stays the server's.
      var chosen = /(^|[?&])per_page=/.test(location.search);
      view.per_page = chosen && first.per_page ? first.per_page : 0;
      $('search').value = view.q;
      remember();
      take(first);
    }
  } catch (e) { /* the server-rendered cards stay */ }
  refresh();
  setInterval(refresh, 5000);
  setInterval(tick, 1000);
}());
