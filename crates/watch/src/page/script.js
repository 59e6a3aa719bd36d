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
  // One unit, the largest that fits, rounded down: as `page/humane.rs` says it.
  var UNITS = [[86400, 'day', 'days'], [3600, 'hour', 'hours'], [60, 'minute', 'minutes'], [1, 'second', 'seconds']];
  function span(sec) {
    sec = Math.floor(Math.abs(sec));
    var u = UNITS[3];
    for (var i = 0; i < UNITS.length; i++) { if (sec >= UNITS[i][0]) { u = UNITS[i]; break; } }
    var n = Math.floor(sec / u[0]);
    return n + ' ' + (n === 1 ? u[1] : u[2]);
  }
  function ago(ts) {
    if (ts === null || ts === undefined) { return 'never'; }
    var d = Math.floor(ts) - Math.floor(now());
    return d > 0 ? 'in ' + span(d) : d < 0 ? span(d) + ' ago' : 'now';
  }
  function expired(t) {
    return !t.never_expires && t.expires_at !== null && t.expires_at !== undefined && t.expires_at <= now();
  }
  function leftText(t) {
    if (t.never_expires) { return 'never expires'; }
    if (t.expires_at === null || t.expires_at === undefined) { return 'expiry unknown'; }
    var d = Math.floor(t.expires_at) - Math.floor(now());
    return d > 0 ? 'expires in ' + span(d) : d === 0 ? 'expired just now' : 'expired ' + span(d) + ' ago';
  }
  function when(ts) { return utc(ts) + ' (' + ago(ts) + ')'; }
  // Text with a line-break opportunity after each `_` and `/`, so that a permission or a path
  // wraps there, never inside a word.
  function breakable(parent, text) {
    // No look-behind in the pattern: a browser without it would refuse the whole script.
    var parts = String(text).match(/[^_\/]*(?:[_\/]|$)/g).filter(function (p) { return p; });
    parts.forEach(function (part, i) {
      parent.appendChild(document.createTextNode(part));
      if (i < parts.length - 1) { parent.appendChild(document.createElement('wbr')); }
    });
    return parent;
  }
  function list(parent, items) {
    if (!items || !items.length) { parent.textContent = '—'; return parent; }
    items.forEach(function (p, i) {
      if (i) { parent.appendChild(document.createTextNode(', ')); }
      breakable(parent, p);
    });
    return parent;
  }
  function live(e, t) {
    e.setAttribute('data-left', '');
    e._token = t;
    e.className = expired(t) ? 'left expired' : 'left';
    e.textContent = leftText(t);
    return e;
  }
  function row(dl, term, value, cls) {
    dl.appendChild(el('dt', null, term));
    var dd = el('dd', cls || null);
    if (typeof value === 'function') { value(dd); } else { dd.textContent = String(value); }
    dl.appendChild(dd);
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
  function stateOf(t) {
    return Object.prototype.hasOwnProperty.call(LABELS, t.state) ? t.state : 'cannot_be_checked';
  }
  function classes(t, base) {
    return base + ' st-' + stateOf(t) + (t.role && t.role.kind === 'backup' ? ' backup' : '');
  }
  function role(parent, t) {
    if (t.role && t.role.kind === 'backup') {
      parent.appendChild(document.createTextNode('backup of '));
      breakable(parent, t.role.of);
    } else {
      parent.appendChild(document.createTextNode('primary'));
    }
    return parent;
  }
  function head(t) {
    var h = el('header');
    h.appendChild(breakable(el('h2', 'name'), t.name));
    h.appendChild(el('span', 'badge', LABELS[stateOf(t)]));
    return h;
  }
  // A token not ok: everything, its reason and fix first (as `page/markup.rs` writes it).
  function card(t) {
    var a = el('article', classes(t, 'token'));
    a.appendChild(head(t));
    var meta = role(el('p', 'meta'), t);
    meta.appendChild(document.createTextNode(' · ' + (t.kind || 'kind unknown') + ' · ' + t.fingerprint));
    a.appendChild(meta);
    a.appendChild(live(el('p'), t));
    if (t.reason) {
      a.appendChild(breakable(el('p', 'why'), t.reason));
      if (t.fix) {
        var fix = el('p', 'fix');
        fix.appendChild(el('b', null, 'Fix:'));
        fix.appendChild(document.createTextNode(' '));
        a.appendChild(breakable(fix, t.fix));
      }
    }
    var dl = el('dl');
    row(dl, 'status', t.last_check ? t.status + (t.valid ? ', valid' : ', not valid') :
      'unknown: no check has answered yet');
    row(dl, 'expires', t.never_expires ? 'never' : t.expires_at ? utc(t.expires_at) : 'unknown');
    if (t.missing_permissions && t.missing_permissions.length) {
      row(dl, 'missing', function (dd) { list(dd, t.missing_permissions); }, 'missing');
    }
    row(dl, 'permissions', function (dd) { list(dd, t.scopes); });
    row(dl, 'last check', t.last_check ? when(t.last_check) : 'never answered');
    if (t.reason && t.unknown) { row(dl, 'last tried', when(t.tried_at)); }
    row(dl, 'next check', t.next_check ? when(t.next_check) : '—');
    a.appendChild(dl);
    chart(t.history || []).forEach(function (e) { a.appendChild(e); });
    return a;
  }
  // An ok token: its name and what is left (and whose backup it is), on two short lines.
  function compactCard(t) {
    var a = el('article', classes(t, 'token compact'));
    a.appendChild(head(t));
    var meta = el('p', 'meta');
    meta.appendChild(live(el('span'), t));
    if (t.role && t.role.kind === 'backup') {
      meta.appendChild(document.createTextNode(' · '));
      role(meta, t);
    }
    a.appendChild(meta);
    return a;
  }
  function sortLink(sort, label) {
    var a = el('a', 'sort', label);
    a.setAttribute('data-sort', sort);
    a.href = params({ sort: sort });
    if (view.sort === sort) { a.setAttribute('aria-current', 'true'); }
    return a;
  }
  function checked(t) {
    if (t.reason && t.unknown) { return 'tried ' + ago(t.tried_at); }
    return t.last_check ? ago(t.last_check) : 'never answered';
  }
  function table(tokens) {
    var tb = el('table', 'table');
    var hr = el('tr');
    [sortLink('state', 'State'), 'Token', sortLink('expiry', 'Expires'), 'Why', 'Last check']
      .forEach(function (h) {
        var th = el('th');
        th.setAttribute('scope', 'col');
        if (typeof h === 'string') { th.textContent = h; } else { th.appendChild(h); }
        hr.appendChild(th);
      });
    tb.appendChild(el('thead')).appendChild(hr);
    var body = el('tbody');
    tokens.forEach(function (t) {
      var tr = el('tr', classes(t, 'row'));
      tr.appendChild(el('td', 'state')).appendChild(el('span', 'badge', LABELS[stateOf(t)]));
      var name = el('td');
      name.appendChild(breakable(el('span', 'name'), t.name));
      name.appendChild(document.createTextNode(' '));
      var meta = el('span', 'meta');
      if (t.role && t.role.kind === 'backup') {
        role(meta, t);
        meta.appendChild(document.createTextNode(' · '));
      }
      meta.appendChild(document.createTextNode(t.fingerprint));
      name.appendChild(meta);
      tr.appendChild(name);
      tr.appendChild(live(el('td'), t));
      var why = el('td', 'why');
      if (t.reason) {
        breakable(why, t.reason);
        if (t.fix) {
          why.appendChild(document.createTextNode(' '));
          var fix = el('span', 'fix');
          fix.appendChild(el('b', null, 'Fix:'));
          fix.appendChild(document.createTextNode(' '));
          why.appendChild(breakable(fix, t.fix));
        }
      }
      tr.appendChild(why);
      tr.appendChild(el('td', 'checked', checked(t)));
      body.appendChild(tr);
    });
    tb.appendChild(body);
    return tb;
  }
  function fmt(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ','); }
  // What the reader asks for; kept in the address bar so that a link shows the same view.
  var view = { q: '', states: [], page: 1, per_page: 0, view: 'cards', sort: 'state' };
  var ORDER = ['dead', 'failed_over', 'critical', 'cannot_be_checked', 'expiring', 'ok'];
  // The query of the view, or of the view with `change` (a view or a sort) made: a new order
  // starts again from the first page.
  function params(change) {
    var v = Object.assign({}, view, change || {});
    var p = [];
    if (v.q) { p.push('q=' + encodeURIComponent(v.q)); }
    if (v.states.length) { p.push('state=' + v.states.join(',')); }
    if (v.page > 1 && (v.sort === view.sort || change.page)) { p.push('page=' + v.page); }
    if (v.per_page) { p.push('per_page=' + v.per_page); }
    if (v.view !== 'cards') { p.push('view=' + v.view); }
    if (v.sort !== 'state') { p.push('sort=' + v.sort); }
    return p.length ? '?' + p.join('&') : (change ? '?' : '');
  }
  // A pager link to page `to` (0: none), as the server writes it.
  function step(a, to) {
    if (to) {
      a.href = params({ page: to });
      a.removeAttribute('aria-disabled');
    } else {
      a.removeAttribute('href');
      a.setAttribute('aria-disabled', 'true');
    }
  }
  function views() {
    var nav = $('views');
    nav.replaceChildren(el('span', 'views-label', 'View'));
    [['cards', 'cards'], ['table', 'table']].forEach(function (v) {
      var a = el('a', 'view', v[1]);
      a.setAttribute('data-view', v[0]);
      a.href = params({ view: v[0] });
      if (view.view === v[0]) { a.setAttribute('aria-current', 'true'); }
      nav.appendChild(a);
    });
    nav.appendChild(el('span', 'views-label', 'Sort'));
    nav.appendChild(sortLink('state', 'worst first'));
    nav.appendChild(sortLink('expiry', 'soonest expiry'));
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
    if (view.view === 'table') {
      tokens.replaceChildren();
      if (list.length) { tokens.appendChild(table(list)); }
    } else {
      tokens.replaceChildren.apply(tokens, list.map(function (t) {
        return t.state === 'ok' ? compactCard(t) : card(t);
      }));
    }
    views();
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
    step($('prev'), view.page > 1 ? view.page - 1 : 0);
    step($('next'), view.page < (data.pages || 1) ? view.page + 1 : 0);
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
    var lefts = $('tokens').querySelectorAll('[data-left]');
    for (var i = 0; i < lefts.length; i++) {
      if (lefts[i]._token) { live(lefts[i], lefts[i]._token); }
    }
    $('updated').textContent = 'Data from ' + utc(data.generated_at) + ' (' + ago(data.generated_at) +
      '); refreshes every 5 s.';
  }
  function take(next) {
    data = next;
    var served = typeof next.served_at === 'number' ? next.served_at : next.generated_at;
    if (typeof served === 'number') { skew = served - Date.now() / 1000; }
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
  // The view and sort links work without the script too; with it, no page load.
  document.addEventListener('click', function (e) {
    var a = e.target.closest ? e.target.closest('a[data-view], a[data-sort]') : null;
    if (!a || e.ctrlKey || e.metaKey || e.shiftKey) { return; }
    e.preventDefault();
    var sort = a.getAttribute('data-sort');
    if (sort) {
      if (sort !== view.sort) { view.page = 1; }
      view.sort = sort;
    } else {
      view.view = a.getAttribute('data-view');
    }
    go();
  });
  // The pager's links work without the script too; with it, no page load.
  $('prev').addEventListener('click', function (e) {
    e.preventDefault();
    if (view.page > 1) { view.page -= 1; go(); }
  });
  $('next').addEventListener('click', function (e) {
    e.preventDefault();
    if (data && view.page < (data.pages || 1)) { view.page += 1; go(); }
  });
  try {
    var first = JSON.parse($('initial').textContent);
    if (first) {
      // The server read the address bar's query; start from what it understood.
      view.q = first.q || '';
      view.states = (first.states || []).filter(function (k) { return ORDER.indexOf(k) >= 0; });
      view.page = first.page || 1;
      view.view = first.view === 'table' ? 'table' : 'cards';
      view.sort = first.sort === 'expiry' ? 'expiry' : 'state';
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
