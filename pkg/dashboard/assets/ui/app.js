// The jetflow dashboard: hash routing (#/ is the instance list,
// #/instances/{id} one instance), the list with its filters and counts,
// the start form, and the live detail view.

import { call, getKey, setKey, watchURL, instancePath, revisionOf, isTerminal, STATUSES } from './api.js';
import { renderJSON, shortJSON, parseJSONInput } from './json.js';
import { progressFor, KNOWN_ORCHESTRATORS } from './sequences.js';
import { renderGantt, formatTime } from './gantt.js';

const $ = (id) => document.getElementById(id);

/** Creates an element; attrs go to properties when the element has them (className, href, ...). */
function h(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role') n.setAttribute(k, String(v));
    else n[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) n.append(c);
  return n;
}

const time = (s) => {
  const t = s ? Date.parse(s) : NaN;
  return Number.isFinite(t) ? formatTime(t) : '–';
};

const LIST_POLL_MS = 5000;
const COUNT_PAGE = 500;
const COUNT_PAGES = 4; // counts look at up to 2000 instances
const PAGE_SIZE = 50;

// ---------------------------------------------------------------- banner

function showBanner(text) {
  const b = $('banner');
  b.textContent = text;
  b.hidden = !text;
}

// ------------------------------------------------------------------ auth

let needKey = false;
let loginOpen = false;

function renderAuth() {
  const key = getKey();
  $('auth-status').hidden = !key;
  $('login-form').hidden = Boolean(key) || !(needKey || loginOpen);
  $('login-open').hidden = Boolean(key) || needKey || loginOpen;
}

window.addEventListener('jetflow:unauthorized', () => {
  const hadKey = Boolean(getKey());
  if (hadKey) {
    try {
      sessionStorage.removeItem('jetflow.apiKey');
    } catch {
      // nothing stored
    }
  }
  const first = !needKey;
  needKey = true;
  showBanner(hadKey ? 'The API key was not accepted. Enter a valid key above.' : 'This server requires an API key. Enter it above to continue.');
  renderAuth();
  if (first || hadKey) $('login-key').focus();
});

function initAuth() {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const key = $('login-key').value.trim();
    if (!key) return;
    $('login-key').value = '';
    needKey = false;
    loginOpen = false;
    showBanner('');
    setKey(key);
    renderAuth();
    route();
  });
  $('logout').addEventListener('click', () => {
    setKey('');
    renderAuth();
    route();
  });
  $('login-open').addEventListener('click', () => {
    loginOpen = true;
    renderAuth();
    $('login-key').focus();
  });
  renderAuth();
}

// ---------------------------------------------------------------- recent

const RECENT_ITEM = 'jetflow.recent';

function recent() {
  try {
    const v = JSON.parse(localStorage.getItem(RECENT_ITEM) || '[]');
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

function saveRecent(list) {
  try {
    localStorage.setItem(RECENT_ITEM, JSON.stringify(list.slice(0, 15)));
  } catch {
    // storage off
  }
}

function addRecent(id, name) {
  saveRecent([{ id, name, at: new Date().toISOString() }, ...recent().filter((r) => r.id !== id)]);
}

function dropRecent(id) {
  saveRecent(recent().filter((r) => r.id !== id));
}

function renderRecent() {
  const list = recent();
  $('recent-card').hidden = list.length === 0;
  $('recent-list').replaceChildren(
    ...list.map((r) =>
      h('li', {}, h('a', { href: '#/instances/' + encodeURIComponent(r.id) }, r.id), ' ', h('span', { className: 'muted' }, r.name || '')),
    ),
  );
}

// ------------------------------------------------------------------ list

const filters = { statuses: new Set(), name: '', prefix: '', from: '', to: '', custom: '' };
const list = { rows: [], token: '', sig: '', pages: 0, gen: 0, timer: 0, loading: 0, unavailable: false, active: false };

function badge(status) {
  return h('span', { className: 'badge', 'data-status': status || '' }, status || '?');
}

function listQuery() {
  const q = { showInput: 'false' };
  if (filters.statuses.size) q.runtimeStatus = [...filters.statuses].join(',');
  if (filters.prefix) q.instanceIdPrefix = filters.prefix;
  if (filters.from) q.createdTimeFrom = new Date(filters.from).toISOString();
  if (filters.to) q.createdTimeTo = new Date(filters.to).toISOString();
  if (filters.custom) q.customStatus = filters.custom;
  return q;
}

async function fetchPage(query, token, top) {
  const headers = token ? { 'x-ms-continuation-token': token } : {};
  const r = await call('GET', 'instances', { query: { ...query, top }, headers });
  return { items: Array.isArray(r.data) ? r.data : [], next: r.headers.get('x-ms-continuation-token') || '' };
}

function setUnavailable(on) {
  list.unavailable = on;
  $('list-unavailable').hidden = !on;
  $('instance-table').hidden = on;
  if (on) {
    $('list-empty').hidden = true;
    $('list-more').hidden = true;
    $('list-summary').textContent = '';
  }
}

async function loadList(reset) {
  const gen = ++list.gen;
  $('list-error').hidden = true;
  list.loading++;
  try {
    const page = await fetchPage(listQuery(), reset ? '' : list.token, PAGE_SIZE);
    if (gen !== list.gen || !list.active) return;
    setUnavailable(false);
    list.rows = reset ? page.items : list.rows.concat(page.items);
    list.pages = reset ? 1 : list.pages + 1;
    list.token = page.next;
    renderRows();
  } catch (err) {
    if (gen !== list.gen || !list.active) return;
    if (err.status === 404) {
      setUnavailable(true);
      return;
    }
    $('list-error').textContent = err.status === 401 ? 'Listing needs an API key.' : 'Cannot list instances: ' + err.message;
    $('list-error').hidden = false;
  } finally {
    list.loading--;
  }
}

function renderRows() {
  const name = filters.name.toLowerCase();
  const shown = name ? list.rows.filter((r) => (r.name || '').toLowerCase().includes(name)) : list.rows;
  // Unchanged rows are left alone (a refresh keeps focus and selection).
  const sig = JSON.stringify([shown, list.rows.length, list.token]);
  if (sig === list.sig) return;
  list.sig = sig;
  $('instance-rows').replaceChildren(
    ...shown.map((r) =>
      h(
        'tr',
        { 'data-testid': 'instance-row', 'data-instance-id': r.instanceId },
        h('td', {}, h('a', { href: '#/instances/' + encodeURIComponent(r.instanceId), className: 'mono' }, r.instanceId)),
        h('td', {}, r.name || ''),
        h('td', {}, badge(r.runtimeStatus)),
        h('td', { className: 'mono cs', title: r.customStatus == null ? '' : JSON.stringify(r.customStatus) }, shortJSON(r.customStatus)),
        h('td', { className: 'nowrap' }, time(r.createdTime)),
        h('td', { className: 'nowrap' }, time(r.lastUpdatedTime)),
      ),
    ),
  );
  $('list-empty').hidden = shown.length > 0;
  $('list-more').hidden = !list.token;
  $('list-summary').textContent =
    `${shown.length} shown` + (shown.length !== list.rows.length ? ` of ${list.rows.length} loaded` : '') + (list.token ? '; more on the server' : '');
}

async function loadCounts() {
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  let total = 0;
  let token = '';
  let capped = false;
  try {
    for (let i = 0; i < COUNT_PAGES; i++) {
      const page = await fetchPage({ showInput: 'false' }, token, COUNT_PAGE);
      for (const r of page.items) {
        counts[r.runtimeStatus] = (counts[r.runtimeStatus] || 0) + 1;
        total++;
      }
      token = page.next;
      if (!token) break;
      if (i === COUNT_PAGES - 1) capped = true;
    }
  } catch {
    if (list.active) renderCounts(null);
    return;
  }
  if (list.active) renderCounts(counts, total, capped);
}

// The count chips are made once and updated in place, so that a chip
// keeps the keyboard focus while the counts refresh.
function initCounts() {
  const chip = (status, label) =>
    h(
      'button',
      {
        type: 'button',
        className: 'count',
        'data-status': status,
        'data-testid': 'count-' + (status || 'All'),
        title: status ? `Show only ${status} instances` : 'Show every status',
        onclick: () => {
          filters.statuses = status ? new Set([status]) : new Set();
          syncStatusChecks();
          loadList(true);
        },
      },
      h('span', { className: 'count-label' }, label),
      h('span', { className: 'count-n' }, '–'),
    );
  $('status-counts').replaceChildren(chip('', 'All'), ...STATUSES.map((s) => chip(s, s)));
  syncPressed();
}

function syncPressed() {
  for (const c of $('status-counts').children) {
    const s = c.dataset.status;
    c.setAttribute('aria-pressed', String(s ? filters.statuses.has(s) : filters.statuses.size === 0));
  }
}

function renderCounts(counts, total, capped) {
  for (const c of $('status-counts').children) {
    const s = c.dataset.status;
    const n = s ? (counts ? counts[s] || 0 : 0) : total;
    c.querySelector('.count-n').textContent = counts ? String(n) + (n && capped ? '+' : '') : '–';
  }
}

function syncStatusChecks() {
  for (const cb of $('filter-status').querySelectorAll('input')) cb.checked = filters.statuses.has(cb.value);
  syncPressed();
}

function readFilters() {
  const custom = $('filter-custom').value.trim();
  let compact = '';
  if (custom) {
    compact = JSON.stringify(parseJSONInput(custom, 'The custom status filter'));
  }
  filters.statuses = new Set([...$('filter-status').querySelectorAll('input:checked')].map((c) => c.value));
  filters.name = $('filter-name').value.trim();
  filters.prefix = $('filter-prefix').value.trim();
  filters.from = $('filter-from').value;
  filters.to = $('filter-to').value;
  filters.custom = compact;
  syncPressed();
}

function initList() {
  initCounts();
  $('filter-status').replaceChildren(
    ...STATUSES.map((s) =>
      h('label', { className: 'check' }, h('input', { type: 'checkbox', value: s, name: 'filter-status' }), ' ', badge(s)),
    ),
  );
  $('filter-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    try {
      readFilters();
      $('filter-error').textContent = '';
    } catch (err) {
      $('filter-error').textContent = err.message;
      return;
    }
    loadList(true);
    loadCounts();
  });
  $('filter-clear').addEventListener('click', () => {
    $('filter-form').reset();
    readFilters();
    $('filter-error').textContent = '';
    loadList(true);
    loadCounts();
  });
  // The name filter is applied on the page, as one types.
  $('filter-name').addEventListener('input', () => {
    filters.name = $('filter-name').value.trim();
    renderRows();
  });
  $('list-more').addEventListener('click', () => loadList(false));
  $('list-refresh').addEventListener('click', () => {
    loadList(true);
    loadCounts();
  });

  const dl = $('known-orchestrators');
  dl.replaceChildren(...Object.entries(KNOWN_ORCHESTRATORS).map(([name, hint]) => h('option', { value: name, label: hint })));

  $('start-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const err = $('start-error');
    err.textContent = '';
    const name = $('start-name').value.trim();
    const id = $('start-id').value.trim();
    const text = $('start-input').value.trim();
    if (!name) {
      err.textContent = 'Enter an orchestrator name.';
      return;
    }
    try {
      parseJSONInput(text, 'The input');
    } catch (e) {
      err.textContent = e.message;
      return;
    }
    const btn = $('start-submit');
    btn.disabled = true;
    try {
      const path = 'orchestrators/' + encodeURIComponent(name) + (id ? '/' + encodeURIComponent(id) : '');
      const r = await call('POST', path, { body: text || 'null' });
      const newId = r.data && r.data.id;
      if (!newId) throw new Error('the server answered without an instance ID');
      addRecent(newId, name);
      $('start-id').value = '';
      window.location.hash = '#/instances/' + encodeURIComponent(newId);
    } catch (e) {
      err.textContent = 'Cannot start: ' + e.message;
    } finally {
      btn.disabled = false;
    }
  });

  $('open-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('open-id').value.trim();
    if (id) window.location.hash = '#/instances/' + encodeURIComponent(id);
  });
}

function showList() {
  list.active = true;
  $('view-list').hidden = false;
  document.title = 'Instances · jetflow';
  renderRecent();
  renderCounts(null);
  loadList(true);
  loadCounts();
  list.timer = window.setInterval(() => {
    if (!$('auto-refresh').checked || document.visibilityState !== 'visible' || list.unavailable) return;
    // Refresh the first page only when no more were loaded by hand.
    if (list.pages <= 1 && list.loading === 0) loadList(true);
    loadCounts();
  }, LIST_POLL_MS);
}

function stopList() {
  list.active = false;
  list.gen++;
  window.clearInterval(list.timer);
  $('view-list').hidden = true;
}

// ---------------------------------------------------------------- detail

let D = null; // the instance on screen

const LIVE_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  finished: 'finished',
  offline: 'not watching',
};

function setLive(state) {
  const el = $('detail-live');
  el.dataset.state = state;
  el.textContent = LIVE_TEXT[state] || state;
}

function resetDetail(id) {
  $('detail-name').textContent = '…';
  $('detail-id').textContent = id;
  $('detail-crumb').textContent = id;
  const b = $('detail-runtime-status');
  b.textContent = '…';
  b.dataset.status = '';
  for (const k of ['detail-created', 'detail-updated', 'detail-revision']) $(k).textContent = '–';
  for (const k of ['detail-custom-status', 'detail-input', 'detail-output']) $(k).replaceChildren();
  $('detail-progress-wrap').hidden = true;
  $('detail-error').hidden = true;
  $('action-result').textContent = '';
  $('detail-timeline').replaceChildren(h('p', { className: 'muted' }, 'No history yet.'));
  $('detail-history').tBodies[0].replaceChildren();
  $('detail-history-count').textContent = '0';
}

function renderProgress(st) {
  const p = progressFor(st.name, st.customStatus);
  const wrap = $('detail-progress-wrap');
  wrap.hidden = !p;
  if (!p) return;
  const total = p.steps.length;
  const bar = $('detail-progress');
  bar.setAttribute('aria-valuemax', String(total));
  bar.setAttribute('aria-valuenow', String(p.step));
  bar.setAttribute('aria-valuetext', `${p.step} of ${total}` + (p.current ? `: ${p.current}` : ''));
  bar.dataset.step = String(p.step);
  bar.dataset.total = String(total);
  bar.classList.toggle('complete', p.step === total);
  $('detail-progress-bar').style.width = `${(p.step / total) * 100}%`;
  $('detail-progress-label').textContent = `${p.step} / ${total}` + (p.current ? ` — ${p.current}` : ' — not started');
  $('detail-progress-steps').replaceChildren(
    ...p.steps.map((s, i) =>
      h('li', { className: i < p.step ? (i === p.step - 1 ? 'done current' : 'done') : 'todo', 'aria-current': i === p.step - 1 ? 'step' : null }, s),
    ),
  );
}

function renderButtons(status) {
  const terminal = isTerminal(status);
  $('action-terminate').disabled = terminal;
  $('action-suspend').disabled = !(status === 'Running' || status === 'Pending');
  $('action-resume').disabled = status !== 'Suspended';
  $('action-rewind').disabled = status !== 'Failed';
  $('raise-submit').disabled = terminal;
}

/** Shows a status body if it is not older than what is on screen. */
function applyStatus(d, st, rev) {
  if (d !== D || !st) return;
  if (rev < d.rev) return;
  d.rev = rev;
  d.status = st;
  $('detail-name').textContent = st.name || '(unnamed)';
  document.title = `${st.name} ${d.id} · jetflow`;
  const b = $('detail-runtime-status');
  b.textContent = st.runtimeStatus;
  b.dataset.status = st.runtimeStatus;
  $('detail-created').textContent = time(st.createdTime);
  $('detail-updated').textContent = time(st.lastUpdatedTime);
  $('detail-revision').textContent = String(rev);
  renderJSON($('detail-custom-status'), st.customStatus);
  renderJSON($('detail-input'), st.input);
  renderJSON($('detail-output'), st.output);
  renderProgress(st);
  renderButtons(st.runtimeStatus);
}

function eventDetails(e) {
  const parts = [];
  if (e.ScheduledTime) parts.push('scheduled ' + time(e.ScheduledTime));
  if (e.FireAt) parts.push('fire at ' + time(e.FireAt));
  if (e.InstanceId) parts.push('instance ' + e.InstanceId);
  if (e.OrchestrationStatus) parts.push(e.OrchestrationStatus);
  if (e.Input !== undefined) parts.push('input ' + shortJSON(e.Input, 80));
  if (e.Result !== undefined) parts.push('result ' + shortJSON(e.Result, 80));
  if (e.Reason) parts.push(e.Reason);
  return parts.join(' · ');
}

function renderHistory(d) {
  if (d !== D) return;
  const hist = d.history || [];
  renderGantt($('detail-timeline'), hist, d.status ? d.status.runtimeStatus : '');
  $('detail-history-count').textContent = String(hist.length);
  $('detail-history').tBodies[0].replaceChildren(
    ...hist.map((e) =>
      h('tr', {}, h('td', { className: 'nowrap' }, time(e.Timestamp)), h('td', {}, e.EventType), h('td', {}, e.FunctionName || e.Name || ''), h('td', { className: 'mono' }, eventDetails(e))),
    ),
  );
}

/** Reads the status with its history; resolves to the status body, or null. */
async function refreshFull(d) {
  try {
    const r = await call('GET', instancePath(d.id), { query: { showHistory: 'true', showHistoryOutput: 'true' } });
    if (d !== D) return null;
    $('detail-error').hidden = true;
    applyStatus(d, r.data, revisionOf(r.headers));
    d.history = (r.data && r.data.historyEvents) || [];
    renderHistory(d);
    return r.data;
  } catch (err) {
    if (d !== D) return null;
    const e = $('detail-error');
    if (err.status === 404) e.textContent = `Instance ${d.id} was not found: it may never have existed, or it was purged.`;
    else if (err.status === 401) e.textContent = 'Reading this instance needs an API key.';
    else e.textContent = 'Cannot read the instance: ' + err.message;
    e.hidden = false;
    return null;
  }
}

/** Reloads the history soon, coalescing bursts of changes. */
function scheduleHistory(d) {
  if (d.historyBusy) {
    d.historyAgain = true;
    return;
  }
  d.historyBusy = true;
  window.setTimeout(async () => {
    await refreshFull(d);
    d.historyBusy = false;
    if (d.historyAgain && d === D) {
      d.historyAgain = false;
      scheduleHistory(d);
    }
  }, 120);
}

function startWatch(d) {
  if (d !== D) return;
  if (d.es) d.es.close();
  window.clearTimeout(d.retry);
  const es = new EventSource(watchURL(d.id));
  d.es = es;
  setLive('connecting');
  es.addEventListener('open', () => {
    if (d === D && d.es === es) setLive('live');
  });
  es.addEventListener('status', (ev) => {
    if (d !== D || d.es !== es) return;
    let st;
    try {
      st = JSON.parse(ev.data);
    } catch {
      return;
    }
    const rev = parseInt(ev.lastEventId, 10);
    applyStatus(d, st, Number.isFinite(rev) ? rev : d.rev);
    scheduleHistory(d);
    if (isTerminal(st.runtimeStatus)) {
      // The server ends the stream after a terminal status; EventSource
      // would reconnect forever, so stop here.
      es.close();
      d.es = null;
      setLive('finished');
    } else {
      setLive('live');
    }
  });
  es.addEventListener('error', async () => {
    if (d !== D || d.es !== es) return;
    if (es.readyState !== EventSource.CLOSED) {
      setLive('reconnecting');
      return;
    }
    // The stream was refused (401, 404, ...): ask the status route why,
    // and try again a little later if the instance is still running.
    d.es = null;
    setLive('offline');
    const st = await refreshFull(d);
    if (d === D && st && !isTerminal(st.runtimeStatus)) d.retry = window.setTimeout(() => startWatch(d), 3000);
  });
}

/** After an operation: if the watch had ended, wait for the change and watch again. */
async function rewatch(d) {
  if (d !== D) return;
  if (!d.es) {
    try {
      await call('GET', instancePath(d.id), { query: { waitForChange: String(Math.max(d.rev, 0)), timeout: '10', showInput: 'false' } });
    } catch {
      // shown by the refresh below
    }
    if (d === D && !d.es) startWatch(d);
  }
  scheduleHistory(d);
}

const CONFIRM = {
  terminate: (id) => `Terminate instance ${id}? It stops for good.`,
  restart: (id) => `Restart instance ${id}? The orchestration starts again from its original input.`,
  purge: (id) => `Purge instance ${id}? Its status and history are deleted; this cannot be undone.`,
};

function setResult(text, isError) {
  const r = $('action-result');
  r.textContent = text;
  r.classList.toggle('error', Boolean(isError));
}

async function act(action) {
  const d = D;
  if (!d) return;
  const id = d.id;
  if (CONFIRM[action] && !window.confirm(CONFIRM[action](id))) return;
  const reason = $('action-reason').value.trim();
  const label = action[0].toUpperCase() + action.slice(1);
  setResult(label + '…');
  try {
    if (action === 'purge') {
      await call('DELETE', instancePath(id));
      dropRecent(id);
      setResult('Purged.');
      if (d === D) window.location.hash = '#/';
      return;
    }
    if (action === 'restart') {
      const newId = $('restart-new-id').checked;
      const r = await call('POST', instancePath(id) + '/restart', { query: { restartWithNewInstanceId: String(newId) } });
      const nid = (r.data && r.data.id) || id;
      addRecent(nid, d.status ? d.status.name : '');
      setResult(nid === id ? 'Restarted.' : `Restarted as ${nid}.`);
      if (nid !== id) {
        window.location.hash = '#/instances/' + encodeURIComponent(nid);
        return;
      }
    } else {
      await call('POST', instancePath(id) + '/' + action, { query: { reason } });
      setResult(label + ' accepted.');
    }
    await rewatch(d);
  } catch (err) {
    if (d === D) setResult(label + ' failed: ' + err.message, true);
  }
}

function initDetail() {
  for (const btn of document.querySelectorAll('#view-detail [data-action]')) {
    btn.addEventListener('click', () => act(btn.dataset.action));
  }
  $('raise-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const d = D;
    if (!d) return;
    const name = $('raise-name').value.trim();
    const text = $('raise-data').value.trim();
    try {
      parseJSONInput(text, 'The event data');
    } catch (e) {
      setResult(e.message, true);
      return;
    }
    setResult('Raising ' + name + '…');
    try {
      await call('POST', instancePath(d.id) + '/raiseEvent/' + encodeURIComponent(name), { body: text || 'null' });
      setResult(`Event ${name} raised.`);
      await rewatch(d);
    } catch (err) {
      if (d === D) setResult('Raise event failed: ' + err.message, true);
    }
  });
}

function showDetail(id) {
  D = { id, rev: -1, status: null, history: [], es: null, retry: 0, tick: 0, historyBusy: false, historyAgain: false };
  const d = D;
  resetDetail(id);
  setLive('connecting');
  $('view-detail').hidden = false;
  document.title = `${id} · jetflow`;
  refreshFull(d);
  startWatch(d);
  // Pending bars and the "now" line move while the instance runs.
  d.tick = window.setInterval(() => {
    if (d === D && d.status && !isTerminal(d.status.runtimeStatus) && document.visibilityState === 'visible') renderHistory(d);
  }, 1000);
}

function stopDetail() {
  if (D) {
    if (D.es) D.es.close();
    window.clearTimeout(D.retry);
    window.clearInterval(D.tick);
  }
  D = null;
  $('view-detail').hidden = true;
}

// ---------------------------------------------------------------- router

function route() {
  stopList();
  stopDetail();
  const m = (window.location.hash || '#/').match(/^#\/instances\/(.+)$/);
  if (m) {
    let id;
    try {
      id = decodeURIComponent(m[1]);
    } catch {
      id = m[1];
    }
    showDetail(id);
  } else {
    showList();
  }
  $('nav-instances').setAttribute('aria-current', m ? 'false' : 'page');
}

function boot() {
  initAuth();
  initList();
  initDetail();
  $('boot').hidden = true;
  window.addEventListener('hashchange', () => {
    route();
    $('main').focus({ preventScroll: true });
  });
  route();
}

boot();
