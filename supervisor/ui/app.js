// The supervisor cluster's dashboard: plain JavaScript, no framework, no
// build step. Everything comes from the admin API of the replica that
// served the page; live updates come from GET /v1/events/stream (read with
// fetch, so that the token can go in a header), and every event makes the
// page ask for the nodes and modules again.
'use strict';

const EVENTS_KEPT = 2000;
const REQUEST_TIMEOUT_MS = 8000;
const TIMELINE_MS = 10 * 60 * 1000;

const st = {
  token: sessionStorage.getItem('sup-token') || '',
  events: [],
  lastIndex: 0,
  cluster: null,
  nodes: [],
  modules: [],
  replicas: [],
  selected: null,
  refreshTimer: null,
  wantToken: false,
};
// A page load's identity: a test checks that live updates never reload.
window.dashboardLoadId = `${Date.now()}-${Math.random()}`;

const $ = (sel) => document.querySelector(sel);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (st.token) h.Authorization = `Bearer ${st.token}`;
  return h;
}

async function api(path, opts = {}) {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
  try {
    const h = headers(opts.body !== undefined ? { 'Content-Type': 'application/json' } : {});
    const r = await fetch(path, {
      method: opts.method || 'GET',
      headers: h,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: ctrl.signal,
    });
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text; }
    if (r.status === 401) {
      askToken(st.token ? 'that token was refused' : '');
    }
    if (!r.ok) {
      throw new ApiError(r.status, (body && body.error) || text || r.statusText);
    }
    return body;
  } catch (e) {
    if (e.name === 'AbortError') throw new ApiError(0, `no answer within ${REQUEST_TIMEOUT_MS / 1000} s`);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

// ---- token -------------------------------------------------------------

function askToken(why) {
  st.wantToken = true;
  $('#token-error').textContent = why || '';
  const d = $('#token-dialog');
  if (!d.open) d.showModal();
}

function saveToken(ev) {
  ev.preventDefault();
  st.token = $('#token-input').value.trim();
  sessionStorage.setItem('sup-token', st.token);
  st.wantToken = false;
  $('#token-dialog').close();
  $('#token-input').value = '';
  loadAll();
}

// ---- formatting ----------------------------------------------------------

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 2) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

const MODULE_TONE = {
  running: 'ok', installing: 'warn', restoring: 'warn', failing_over: 'move',
  failed: 'bad', pending: '', stopped: '',
};
const NODE_TONE = { ready: 'ok', suspect: 'warn', down: 'bad', draining: 'info' };

function pill(word, tone) {
  return `<span class="pill ${tone || ''}">${esc(String(word).replace(/_/g, ' '))}</span>`;
}

const EVENT_TONE = {
  failure_detected: 'bad', start_failed: 'bad', install_failed: 'bad', failover_failed: 'bad',
  module_failed: 'bad', node_down: 'bad', package_quarantined: 'bad', rollout_reverted: 'bad',
  restore_ordered: 'warn', node_suspect: 'warn', failover_waiting: 'warn', fleet_rollout_paused: 'warn',
  restored: 'ok', installed: 'ok', failover_completed: 'ok', node_ready: 'ok', rollout_completed: 'ok',
  fleet_rollout_completed: 'ok',
  failover_started: 'move', drain_moved: 'move', placed: 'info', node_draining: 'info',
  rollout_started: 'info', module_deployed: 'info',
};

function describe(e) {
  const d = e.detail || {};
  const m = e.module ? `<b>${esc(e.module)}</b>` : '';
  const on = e.node ? ` on ${esc(e.node)}` : '';
  switch (e.kind) {
    case 'failure_detected': return `${m} went down${on}${d.status ? ` (${esc(d.status)})` : ''}`;
    case 'restore_ordered': return `restore ${esc(d.attempt || '')}/${esc(d.of || '')} of ${m} ordered${on}`;
    case 'restored': return `${m} restored${on}, running healthy`;
    case 'installed': return `${m} installed and healthy${on}`;
    case 'placed': return `${m} placed${on}`;
    case 'failover_started': return `${m} failing over from ${esc(d.from || '?')} to ${esc(e.node || '?')}${d.reason ? `: ${esc(d.reason)}` : ''}`;
    case 'failover_completed': return `${m} running${on} after failover`;
    case 'drain_moved': return `${m} moved off ${esc(d.from || '?')} (drain) to ${esc(e.node || '?')}`;
    case 'node_draining': return `node ${esc(e.node)} draining`;
    case 'module_deployed': return `${m} deployed (${esc(d.package || '')})`;
    case 'module_removed': return `${m} removed`;
    case 'package_retrieved': return `package of ${m} retrieved for ${esc(e.node || '?')} (${esc(d.version || '')})`;
    case 'package_prestaged': return `package of ${m} pre-staged on ${esc(e.node || '?')} (${esc(d.package || '')})`;
    case 'node_registered': return `node ${esc(e.node)} registered (${esc(d.addr || '')})`;
    case 'node_ready': return `node ${esc(e.node)} ready`;
    case 'node_suspect': return `node ${esc(e.node)} suspect: ${esc(d.detail || '')}`;
    case 'node_down': return `node ${esc(e.node)} down: ${esc(d.detail || '')}`;
    default: {
      const kv = Object.entries(d).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(' ');
      return `${m}${on} ${kv}`.trim();
    }
  }
}

// ---- loading -------------------------------------------------------------

async function loadAll() {
  try {
    await Promise.all([refresh(), refreshReplicas(), loadEvents()]);
  } catch (e) {
    showError(e);
  }
}

async function refresh() {
  const [cluster, nodes, modules] = await Promise.all([
    api('/v1/cluster'), api('/v1/nodes'), api('/v1/modules'),
  ]);
  st.cluster = cluster;
  st.nodes = nodes;
  st.modules = modules;
  renderSummary();
  renderNodes();
  renderModules();
  if (st.selected) renderDetailFacts();
}

function scheduleRefresh() {
  if (st.refreshTimer) return;
  st.refreshTimer = setTimeout(async () => {
    st.refreshTimer = null;
    try { await refresh(); } catch (e) { showError(e); }
  }, 80);
}

async function refreshReplicas() {
  st.replicas = await api('/v1/cluster/replicas');
  renderReplicas();
}

async function loadEvents() {
  if (st.events.length) return;
  const list = await api('/v1/events?limit=300');
  list.sort((a, b) => a.index - b.index);
  for (const e of list) addEvent(e, false);
}

function addEvent(e, fresh) {
  if (e.index <= st.lastIndex) return;
  st.lastIndex = e.index;
  st.events.push(e);
  if (st.events.length > EVENTS_KEPT) st.events.splice(0, st.events.length - EVENTS_KEPT);
  const li = document.createElement('li');
  li.dataset.kind = e.kind;
  li.dataset.index = e.index;
  if (e.module) li.dataset.module = e.module;
  if (e.node) li.dataset.node = e.node;
  if (fresh) li.className = 'fresh';
  li.innerHTML = `<span class="when" data-at="${e.at_ms}" title="${esc(new Date(e.at_ms).toLocaleString())}">${esc(ago(e.at_ms))}</span>`
    + `<span>${pill(e.kind, EVENT_TONE[e.kind])}</span><span class="what">${describe(e)}</span>`;
  const ul = $('#events');
  ul.insertBefore(li, ul.firstChild);
  while (ul.children.length > 300) ul.removeChild(ul.lastChild);
  if (fresh) {
    scheduleRefresh();
    if (st.selected && e.module === st.selected) renderTimeline();
  }
}

// The live stream: Server-Sent Events read with fetch (EventSource cannot
// send the token), resumed from the last index seen; polling when the
// replica has no stream endpoint.
async function follow() {
  for (;;) {
    if (st.wantToken) { await sleep(500); continue; }
    try {
      const r = await fetch(`/v1/events/stream?after=${st.lastIndex}`, {
        headers: headers({ Accept: 'text/event-stream' }),
      });
      if (r.status === 401) { askToken('the token was refused'); continue; }
      if (r.status === 404) { setLive('polling', 'warn'); await pollOnce(); await sleep(1000); continue; }
      if (!r.ok || !r.body) throw new Error(`stream: ${r.status}`);
      setLive('live', 'ok');
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          handleSse(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      // fall through: reconnect
    }
    setLive('reconnecting', 'warn');
    await sleep(1000);
  }
}

function handleSse(chunk) {
  let data = '';
  let kind = 'message';
  for (const line of chunk.split('\n')) {
    if (line.startsWith('data:')) data += line.slice(5).trimStart();
    else if (line.startsWith('event:')) kind = line.slice(6).trim();
  }
  if (!data) return;
  let body;
  try { body = JSON.parse(data); } catch { return; }
  if (body && typeof body.index === 'number' && body.kind) {
    addEvent(body, true);
  } else if (kind !== 'message') {
    // A notice from the server (e.g. events that rolled off): reload.
    scheduleRefresh();
  }
}

async function pollOnce() {
  try {
    const list = await api(`/v1/events?after=${st.lastIndex}&limit=1000`);
    for (const e of list) addEvent(e, true);
  } catch (e) {
    showError(e);
  }
}

function setLive(word, tone) {
  const el = $('#live');
  el.textContent = word;
  el.className = `pill ${tone}`;
}

let errorTimer = null;
function showError(e) {
  if (e instanceof ApiError && e.status === 401) return;
  const el = $('#summary');
  el.textContent = `error: ${e.message || e}`;
  el.classList.add('error');
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { el.classList.remove('error'); renderSummary(); }, 5000);
}

// ---- rendering -------------------------------------------------------------

function renderSummary() {
  const c = st.cluster;
  if (!c) return;
  const counts = {};
  for (const m of st.modules) counts[m.state] = (counts[m.state] || 0) + 1;
  const parts = Object.entries(counts).map(([s, n]) => `${n} ${s.replace(/_/g, ' ')}`).join(', ');
  $('#summary').textContent = `leader ${c.leader != null ? `s${c.leader}` : 'none'} · term ${c.term}`
    + ` · applied ${c.last_applied} · ${st.nodes.length} nodes · ${st.modules.length} modules`
    + (parts ? ` (${parts})` : '');
}

function renderReplicas() {
  const leader = st.cluster ? st.cluster.leader : null;
  $('#replicas').innerHTML = st.replicas.map((r) => {
    const isLeader = r.state === 'Leader' || r.id === leader;
    const cls = ['replica', isLeader ? 'leader' : '', r.state ? '' : 'down'].join(' ');
    const status = r.state
      ? pill(r.ready ? (isLeader ? 'leader' : 'ready') : 'not ready', r.ready ? (isLeader ? 'info' : 'ok') : 'warn')
      : pill('unreachable', 'bad');
    return `<div class="${cls}" data-replica="${r.id}" data-leader="${isLeader}" data-ready="${r.ready}">`
      + `<div class="name">s${r.id} ${status}</div>`
      + `<div class="meta mono">${esc(r.addr)}</div>`
      + `<div class="meta">${r.term != null ? `term ${r.term} · applied ${r.applied ?? '?'}` : esc(r.reason || '')}</div>`
      + (r.ready || !r.reason || !r.state ? '' : `<div class="meta">${esc(r.reason)}</div>`)
      + '</div>';
  }).join('');
}

function renderNodes() {
  $('#nodes tbody').innerHTML = st.nodes.map((n) => {
    const draining = n.status === 'draining';
    const action = draining ? 'undrain' : 'drain';
    const labels = Object.entries(n.labels || {}).map(([k, v]) => `<code>${esc(k)}=${esc(v)}</code>`).join(' ');
    return `<tr data-node="${esc(n.id)}" data-status="${esc(n.status)}">`
      + `<td><b>${esc(n.id)}</b></td><td class="status">${pill(n.status, NODE_TONE[n.status])}</td>`
      + `<td class="num lease">${n.lease_left_ms == null ? '<span class="muted">—</span>' : `${(n.lease_left_ms / 1000).toFixed(1)} s`}</td>`
      + `<td title="${esc(n.modules.join(', '))}">${n.modules.length}${n.modules.length ? ` <span class="muted">(${esc(n.modules.slice(0, 4).join(', '))}${n.modules.length > 4 ? ', …' : ''})</span>` : ''}</td>`
      + `<td>${labels || '<span class="muted">—</span>'}</td>`
      + `<td class="mono muted">${esc(n.addr)}</td>`
      + `<td><button type="button" class="${draining ? '' : 'danger'}" data-action="${action}" data-${action}="${esc(n.id)}">${action}</button></td>`
      + '</tr>';
  }).join('');
}

function renderModules() {
  $('#module-count').textContent = `(${st.modules.length})`;
  $('#modules tbody').innerHTML = st.modules.map((m) => {
    const sel = m.name === st.selected ? ' class="selected"' : '';
    return `<tr data-module="${esc(m.name)}" data-state="${esc(m.state)}"${sel}>`
      + `<td><b>${esc(m.name)}</b></td><td class="state">${pill(m.state, MODULE_TONE[m.state])}</td>`
      + `<td class="node">${esc(m.node || '—')}</td><td class="num">${m.epoch ?? '—'}</td>`
      + `<td class="num">${m.revision ?? 1}</td><td class="num">${m.restore_attempts}</td>`
      + `<td class="num">${m.failovers}</td><td class="mono">${esc(m.package.name)}@${esc(m.package.version)}</td>`
      + `<td class="reason" title="${esc(m.reason || '')}">${esc(m.reason || '')}</td></tr>`;
  }).join('');
}

// ---- module detail ---------------------------------------------------------

async function select(name) {
  st.selected = name;
  $('#detail-card').hidden = false;
  $('#detail-title').textContent = `Module ${name}`;
  renderModules();
  renderDetailFacts();
  renderTimeline();
  await Promise.all([loadHistory(name), loadWhy(name), loadLogs(name)]);
}

function renderDetailFacts() {
  const m = st.modules.find((x) => x.name === st.selected);
  if (!m) {
    $('#detail-facts').innerHTML = '<div class="muted">removed</div>';
    return;
  }
  const fact = (k, v) => `<div><span class="k">${esc(k)}</span>${v}</div>`;
  const r = m.rollout;
  $('#detail-facts').innerHTML = [
    fact('state', pill(m.state, MODULE_TONE[m.state])),
    fact('node', esc(m.node || '—')),
    fact('epoch', esc(m.epoch ?? '—')),
    fact('revision', esc(m.revision ?? 1)),
    fact('package', `<code>${esc(m.package.name)}@${esc(m.package.version)}</code>`),
    fact('installed', esc(m.installed_version || '—')),
    fact('placed by', esc(m.placed_by || '—')),
    fact('fencing', esc(m.fencing)),
    fact('restores', esc(m.restore_attempts)),
    fact('failovers', esc(m.failovers)),
    fact('tried nodes', esc((m.tried_nodes || []).join(', ') || '—')),
    fact('rollout', r ? `${esc(r.from)} → ${esc(r.to)} ${pill(r.state, r.state === 'completed' ? 'ok' : r.state === 'reverted' ? 'bad' : 'info')}` : '—'),
    fact('updated', `<span data-at="${m.updated_ms}">${esc(ago(m.updated_ms))}</span>`),
    fact('reason', esc(m.reason || '—')),
  ].join('');
  $('#detail-actions').innerHTML = `<button type="button" data-action="rollback" data-module="${esc(m.name)}">roll back</button> `
    + `<button type="button" data-action="reset" data-module="${esc(m.name)}">reset</button>`;
}

const TIMELINE_ROWS = [
  { cls: 'failure', color: '#c62828', kinds: ['failure_detected', 'start_failed', 'install_failed', 'failover_failed', 'module_failed'] },
  { cls: 'restore', color: '#a86400', kinds: ['restore_ordered'] },
  { cls: 'restored', color: '#1e8e4e', kinds: ['restored', 'installed', 'failover_completed', 'rollout_completed'] },
  { cls: 'failover', color: '#1f5fbf', kinds: ['failover_started', 'drain_moved', 'placed', 'rollout_started', 'rollout_reverted'] },
];

function renderTimeline() {
  const name = st.selected;
  const now = Date.now();
  const mine = st.events.filter((e) => e.module === name && e.at_ms >= now - TIMELINE_MS);
  // The window: from a little before the module's first event (at least
  // a minute, at most ten).
  const oldest = mine.length ? Math.min(...mine.map((e) => e.at_ms)) : now;
  const span = Math.max(60 * 1000, Math.min(TIMELINE_MS, (now - oldest) * 1.15));
  const from = now - span;
  const W = Math.max(300, $('#timeline').clientWidth || 800);
  const rowH = 16;
  const x = (t) => 8 + Math.max(0, Math.min(1, (t - from) / span)) * (W - 16);
  let marks = '';
  TIMELINE_ROWS.forEach((row, i) => {
    const y = 10 + i * rowH;
    marks += `<line x1="0" x2="${W}" y1="${y}" y2="${y}" stroke="#eceef2"/>`;
    for (const e of mine) {
      if (!row.kinds.includes(e.kind)) continue;
      marks += `<circle data-kind="${esc(e.kind)}" cx="${x(e.at_ms).toFixed(1)}" cy="${y}" r="5" fill="${row.color}">`
        + `<title>${esc(e.kind.replace(/_/g, ' '))} ${esc(e.node || '')} ${esc(new Date(e.at_ms).toLocaleTimeString())}</title></circle>`;
    }
  });
  const ticks = [1, 0.75, 0.5, 0.25, 0].map((f) => {
    const t = now - f * span;
    const label = f === 0 ? 'now' : `-${Math.round((f * span) / 1000)} s`;
    const anchor = f === 1 ? 'start' : f === 0 ? 'end' : 'middle';
    return `<text x="${x(t).toFixed(1)}" y="84" font-size="11" fill="#6b7385" text-anchor="${anchor}">${label}</text>`;
  }).join('');
  $('#timeline').innerHTML = `<svg width="${W}" height="90" viewBox="0 0 ${W} 90">${marks}${ticks}</svg>`
    + '<div class="legend">' + TIMELINE_ROWS.map((r) => `<span><i class="${r.cls}"></i>${r.cls === 'restore' ? 'restore ordered' : r.cls}</span>`).join('')
    + `<span class="range">${mine.length} events in the last ${Math.round(span / 1000)} s</span></div>`;
}

async function loadHistory(name) {
  try {
    const h = await api(`/v1/modules/${encodeURIComponent(name)}/history`);
    $('#history tbody').innerHTML = h.slice().reverse().map((r) => `<tr><td class="num">${r.revision}</td>`
      + `<td class="mono">${esc(r.package.name)}@${esc(r.package.version)}</td>`
      + `<td>${pill(r.outcome, r.outcome === 'active' ? 'ok' : r.outcome === 'failed' ? 'bad' : '')}</td>`
      + `<td class="num">${r.restores}</td><td class="num">${r.failovers}</td></tr>`).join('');
  } catch (e) {
    $('#history tbody').innerHTML = `<tr><td colspan="5" class="muted">${esc(e.message)}</td></tr>`;
  }
}

async function loadWhy(name) {
  const ol = $('#why');
  try {
    const chain = await api(`/v1/modules/${encodeURIComponent(name)}/why`);
    const items = Array.isArray(chain) ? chain : (chain && (chain.chain || chain.events)) || [];
    ol.innerHTML = items.map((e) => `<li>${pill(e.kind, EVENT_TONE[e.kind])} ${e.text ? esc(e.text) : describe(e)}`
      + ` <span class="muted" data-at="${e.at_ms}">${esc(ago(e.at_ms))}</span></li>`).join('') || '<li class="muted">nothing recorded</li>';
  } catch (e) {
    ol.innerHTML = `<li class="muted">${e.status === 404 ? 'the causal chain is not served by this version' : esc(e.message)}</li>`;
  }
}

async function loadLogs(name) {
  const pre = $('#logs');
  try {
    const text = await api(`/v1/modules/${encodeURIComponent(name)}/logs?tail=50`);
    pre.textContent = typeof text === 'string' ? text : JSON.stringify(text, null, 2);
    pre.classList.remove('muted');
  } catch (e) {
    pre.textContent = e.status === 404 ? 'logs are not served by this version' : e.message;
    pre.classList.add('muted');
  }
}

// ---- actions ---------------------------------------------------------------

// A destructive button asks for a second click within 4 s.
function armed(btn) {
  if (btn.classList.contains('armed')) return true;
  btn.classList.add('armed');
  const label = btn.textContent;
  btn.textContent = `confirm ${label}`;
  setTimeout(() => {
    btn.classList.remove('armed');
    btn.textContent = label;
  }, 4000);
  return false;
}

async function act(btn) {
  const a = btn.dataset.action;
  try {
    if (a === 'close-detail') {
      st.selected = null;
      $('#detail-card').hidden = true;
      renderModules();
      return;
    }
    if (!armed(btn)) return;
    btn.disabled = true;
    if (a === 'drain' || a === 'undrain') {
      const node = btn.dataset[a];
      await api(`/v1/nodes/${encodeURIComponent(node)}/${a}`, { method: 'POST' });
    } else if (a === 'rollback') {
      await api(`/v1/modules/${encodeURIComponent(btn.dataset.module)}/rollback`, { method: 'POST', body: {} });
    } else if (a === 'reset') {
      await api(`/v1/modules/${encodeURIComponent(btn.dataset.module)}/reset`, { method: 'POST' });
    }
    scheduleRefresh();
  } catch (e) {
    showError(e);
  } finally {
    btn.disabled = false;
  }
}

document.addEventListener('click', (ev) => {
  const btn = ev.target.closest('button[data-action]');
  if (btn) {
    ev.stopPropagation();
    act(btn);
    return;
  }
  const row = ev.target.closest('#modules tbody tr[data-module]');
  if (row) select(row.dataset.module);
});

document.addEventListener('DOMContentLoaded', () => {
  $('#token-form').addEventListener('submit', saveToken);
  $('#token-open').addEventListener('click', () => askToken(''));
  loadAll();
  follow();
  // Relative times tick; replica health and leases are asked again every
  // few seconds (they change without events).
  setInterval(() => {
    document.querySelectorAll('[data-at]').forEach((el) => { el.textContent = ago(Number(el.dataset.at)); });
  }, 1000);
  setInterval(() => { refreshReplicas().catch(() => {}); }, 3000);
  setInterval(() => { refresh().catch(() => {}); }, 10000);
  setInterval(() => { if (st.selected) renderTimeline(); }, 5000);
});
