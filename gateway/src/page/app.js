// The fleet page. Everything it shows comes from GET api/events (Server-Sent Events: a snapshot,
// then each change); its buttons POST to bonk. Text from desks and alerts is only ever set with
// textContent, never parsed as markup.
'use strict';

(() => {
  const MAX_BONKS = 100;
  const FULL_RETRY_MS = 30000;
  const $ = (id) => document.getElementById(id);
  // Relative to the page (it may sit under a proxy's path) but without the credentials a page
  // opened as user:password@host carries in its URL: fetch refuses such URLs, and the browser
  // sends the credentials it was given anyway.
  const base = location.origin + location.pathname;
  const url = (path) => new URL(path, base).href;
  const desks = new Map(); // desk name -> desk view
  let bonks = []; // feed bonks, newest first
  let source = null;

  // Rows are rebuilt only when what they show changed, so a button does not vanish under a
  // pointer because another desk reported.
  const built = { desks: new Map(), feed: new Map() };

  function place(parent, cache, items, key, build) {
    const nodes = items.map((item) => {
      const k = key(item);
      const old = cache.get(k.id);
      if (old && old.key === k.key) return old.node;
      const node = build(item);
      cache.set(k.id, { key: k.key, node });
      return node;
    });
    const shown = new Set(items.map((item) => key(item).id));
    for (const id of cache.keys()) if (!shown.has(id)) cache.delete(id);
    const same = nodes.length === parent.children.length && nodes.every((n, i) => parent.children[i] === n);
    if (!same) parent.replaceChildren(...nodes);
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function badge(text, kind) {
    return el('span', text, 'badge ' + (kind || text));
  }

  function ago(iso) {
    if (!iso) return '—';
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return seconds + ' s ago';
    if (seconds < 3600) return Math.round(seconds / 60) + ' min ago';
    if (seconds < 86400) return Math.round(seconds / 3600) + ' h ago';
    return Math.round(seconds / 86400) + ' d ago';
  }

  function clock(iso) {
    const date = new Date(iso);
    return isNaN(date) ? '' : date.toLocaleTimeString();
  }

  function watches(desk, namespace) {
    return desk.namespaces.includes(namespace) || desk.namespaces.includes('+');
  }

  function setConnection(text, kind) {
    const conn = $('conn');
    conn.textContent = text;
    conn.className = 'conn ' + kind;
  }

  function renderFilters() {
    const select = $('ns-filter');
    const chosen = select.value;
    const namespaces = new Set();
    for (const desk of desks.values()) desk.namespaces.forEach((ns) => namespaces.add(ns));
    namespaces.delete('+');
    select.replaceChildren(el('option', 'all'));
    select.firstChild.value = '';
    for (const ns of [...namespaces].sort()) select.append(el('option', ns));
    select.value = namespaces.has(chosen) ? chosen : '';
    const kind = $('bonk-kind').value;
    const targets = kind === 'desk' ? [...desks.keys()] : [...namespaces].sort();
    $('targets').replaceChildren(...targets.map((t) => Object.assign(el('option'), { value: t })));
  }

  function deskRow(desk) {
    const health = desk.health || {};
    const servo = health.servo || {};
    const row = el('tr', null, desk.online ? 'online' : 'offline');
    row.dataset.desk = desk.desk;
    row.dataset.status = desk.status;
    // The button sits by the name so that it stays in view when a phone scrolls the table.
    const name = el('td', null, 'name');
    const identify = el('button', 'Identify', 'identify');
    identify.type = 'button';
    identify.title = 'a gentle wiggle of this desk\'s Tux only';
    identify.addEventListener('click', () => send({ desk: desk.desk, severity: 'info', message: 'identify ' + desk.desk }));
    name.append(el('span', desk.desk), ' ', identify);
    row.append(name);
    const status = el('td');
    status.append(badge(desk.status), ' ', el('span', ago(desk.status_since), 'muted'));
    status.title = 'since ' + new Date(desk.status_since).toLocaleString();
    row.append(status);
    row.append(el('td', desk.namespaces.join(', ') || '—', 'ns'));
    const last = el('td', ago(desk.last_bonk_at));
    if (health.last_bonk_pod) {
      last.append(' ', el('span', (health.last_bonk_namespace || '') + '/' + health.last_bonk_pod, 'muted'));
    }
    row.append(last);
    row.append(el('td', desk.bonks_total ?? '—'));
    const servoCell = el('td', servo.state || '—');
    if (servo.error) servoCell.title = servo.error;
    row.append(servoCell);
    row.append(el('td', health.agent_version || '—', 'wide'));
    row.append(el('td', health.soc_temp_c == null ? '—' : health.soc_temp_c.toFixed(1) + ' °C', 'wide'));
    return row;
  }

  function renderDesks() {
    const filter = $('ns-filter').value;
    const shown = [...desks.values()]
      .filter((desk) => !filter || watches(desk, filter))
      // Offline desks first: they are the ones to look at.
      .sort((a, b) => (a.online - b.online) || a.desk.localeCompare(b.desk));
    place($('desks').tBodies[0], built.desks, shown,
      (desk) => ({ id: desk.desk, key: JSON.stringify(desk) + ago(desk.status_since) + ago(desk.last_bonk_at) }),
      deskRow);
    const online = [...desks.values()].filter((d) => d.online).length;
    $('desk-count').textContent = online + ' of ' + desks.size + ' online';
    $('no-desks').hidden = desks.size > 0;
  }

  function targetText(target) {
    if (target.desk !== undefined) return 'desk ' + target.desk;
    return 'namespace ' + target.namespace;
  }

  function feedItem(bonk) {
    const item = el('li', null, bonk.merged_into ? 'merged' : '');
    item.dataset.id = bonk.id;
    const head = el('div');
    head.append(el('span', clock(bonk.at), 'muted'), ' ', badge(bonk.source, 'source'), ' ',
      badge(bonk.severity), ' ', el('span', targetText(bonk.target)));
    item.append(head);
    const what = [bonk.namespace, bonk.pod, bonk.container].filter((x) => x).join('/');
    if (what || bonk.alertname) {
      item.append(el('div', [bonk.alertname, what].filter((x) => x).join(' '), 'what'));
    }
    if (bonk.summary) item.append(el('div', bonk.summary, 'summary'));
    if (bonk.merged_into) {
      const into = bonks.find((b) => b.id === bonk.merged_into);
      const text = 'merged into bonk ' + bonk.merged_into.slice(0, 8) +
        (into ? ' (' + clock(into.at) + ', ' + into.source + ')' : '') + ': its kill had already bonked';
      item.append(el('div', text, 'muted merged-into'));
    }
    const list = el('div', null, 'desks');
    for (const desk of bonk.desks) {
      const outcome = desk.outcome || 'waiting';
      const chip = badge(desk.desk + ': ' + outcome.replace('_', ' ') +
        (desk.latency_ms == null ? '' : ' ' + Math.round(desk.latency_ms) + ' ms'), outcome);
      chip.dataset.desk = desk.desk;
      chip.dataset.outcome = outcome;
      if (desk.detail) chip.title = desk.detail;
      list.append(chip);
    }
    if (bonk.desks.length === 0 && !bonk.merged_into) list.append(el('span', 'no desk was watching', 'muted'));
    item.append(list);
    return item;
  }

  function renderFeed() {
    const filter = $('ns-filter').value;
    const shown = bonks.filter((b) => !filter || b.namespace === filter || b.target.namespace === filter ||
      (b.target.desk !== undefined && desks.has(b.target.desk) && watches(desks.get(b.target.desk), filter)));
    place($('feed'), built.feed, shown, (bonk) => ({
      id: bonk.id,
      key: JSON.stringify(bonk) + (bonks.some((b) => b.id === bonk.merged_into) ? '+' : ''),
    }), feedItem);
    $('no-bonks').hidden = bonks.length > 0;
  }

  function renderAll() {
    renderFilters();
    renderDesks();
    renderFeed();
  }

  async function send(request) {
    const result = $('bonk-result');
    result.textContent = 'sending…';
    try {
      const response = await fetch(url('bonk'), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(request),
        credentials: 'same-origin',
      });
      const body = await response.json().catch(() => ({}));
      result.textContent = response.ok
        ? 'sent bonk ' + body.id.slice(0, 8) + ' to ' + body.topic
        : 'refused (' + response.status + '): ' + (body.error || response.statusText);
    } catch (error) {
      result.textContent = 'cannot reach the gateway: ' + error.message;
    }
  }

  function on(name, handler) {
    source.addEventListener(name, (event) => {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      handler(data);
    });
  }

  function connect() {
    source = new EventSource(url('api/events'));
    source.onopen = () => setConnection('live', 'ok');
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (every stream place taken, or credentials): the browser gives up; try later.
        setConnection('not connected; trying again in 30 s', 'bad');
        setTimeout(connect, FULL_RETRY_MS);
      } else {
        setConnection('reconnecting…', 'bad');
      }
    };
    on('snapshot', (snapshot) => {
      desks.clear();
      for (const desk of snapshot.desks) desks.set(desk.desk, desk);
      bonks = snapshot.bonks.reverse().slice(0, MAX_BONKS);
      setConnection('live', 'ok');
      renderAll();
    });
    on('desk', (desk) => {
      desks.set(desk.desk, desk);
      renderFilters();
      renderDesks();
    });
    on('desk_removed', (removed) => {
      desks.delete(removed.desk);
      renderAll();
    });
    on('bonk', (bonk) => {
      const index = bonks.findIndex((b) => b.id === bonk.id);
      if (index >= 0) bonks[index] = bonk;
      else bonks.unshift(bonk);
      bonks.length = Math.min(bonks.length, MAX_BONKS);
      renderFeed();
    });
    on('ack', (ack) => {
      const bonk = bonks.find((b) => b.id === ack.bonk);
      if (!bonk) return;
      const entry = { desk: ack.desk, outcome: ack.outcome, latency_ms: ack.latency_ms, detail: ack.detail };
      const known = bonk.desks.find((d) => d.desk === ack.desk);
      if (known) Object.assign(known, entry);
      else bonk.desks.push(entry);
      renderFeed();
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('ns-filter').addEventListener('change', () => {
      renderDesks();
      renderFeed();
    });
    $('bonk-kind').addEventListener('change', renderFilters);
    $('bonk-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const kind = $('bonk-kind').value;
      send({ [kind]: $('bonk-target').value.trim(), severity: $('bonk-severity').value });
    });
    // Relative times age; redraw them now and then (nothing is fetched).
    setInterval(() => {
      renderDesks();
    }, 30000);
    renderAll();
    connect();
  });
})();
