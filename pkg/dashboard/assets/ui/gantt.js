// The history timeline: a Gantt chart, in SVG, of an instance's run, its
// activities (ScheduledTime → the Timestamp of TaskCompleted/TaskFailed),
// sub-orchestrations, timers (TimerCreated's Timestamp → FireAt) and the
// events it received.

import { isTerminal } from './api.js';
import { shortJSON } from './json.js';

const NS = 'http://www.w3.org/2000/svg';
const MAX_ROWS = 300;

function ms(s) {
  const t = s ? Date.parse(s) : NaN;
  return Number.isFinite(t) ? t : null;
}

export function formatTime(t) {
  if (t === null || t === undefined) return '–';
  const d = new Date(t);
  const p = (n, w = 2) => String(n).padStart(w, '0');
  let s = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  if (d.getMilliseconds()) s += '.' + p(d.getMilliseconds(), 3);
  return s;
}

export function formatDuration(d) {
  if (d < 1000) return `${Math.round(d)} ms`;
  if (d < 60e3) return `${(d / 1000).toFixed(d < 10e3 ? 2 : 1).replace(/\.?0+$/, '')} s`;
  if (d < 3600e3) return `${Math.floor(d / 60e3)} min ${Math.round((d % 60e3) / 1000)} s`;
  return `${Math.floor(d / 3600e3)} h ${Math.round((d % 3600e3) / 60e3)} min`;
}

/** Turns historyEvents into chart rows. */
export function buildRows(history, runtimeStatus, now) {
  const rows = [];
  const done = isTerminal(runtimeStatus);
  const fired = new Set();
  let runEnd = null;
  for (const e of history) {
    if (e.EventType === 'TimerFired' && e.TimerId !== undefined) fired.add(e.TimerId);
    if (['ExecutionCompleted', 'ExecutionTerminated', 'ContinuedAsNew'].includes(e.EventType)) runEnd = ms(e.Timestamp);
  }
  for (const e of history) {
    const ts = ms(e.Timestamp);
    switch (e.EventType) {
      case 'ExecutionStarted': {
        const failed = runtimeStatus === 'Failed' || runtimeStatus === 'Terminated';
        rows.push({
          kind: 'orch', label: e.FunctionName || 'orchestration', start: ts,
          end: runEnd ?? (done ? ts : now), state: runEnd === null && !done ? 'pending' : failed ? 'failed' : 'done',
          detail: runtimeStatus,
        });
        break;
      }
      case 'TaskCompleted':
      case 'TaskFailed':
      case 'SubOrchestrationInstanceCompleted':
      case 'SubOrchestrationInstanceFailed': {
        const sub = e.EventType.startsWith('Sub');
        const failed = e.EventType.endsWith('Failed');
        rows.push({
          kind: sub ? 'sub' : 'act',
          label: (e.FunctionName || (sub ? 'sub-orchestration' : 'activity')) + (sub && e.InstanceId ? ` (${e.InstanceId})` : ''),
          start: ms(e.ScheduledTime) ?? ts, end: ts, state: failed ? 'failed' : 'done',
          detail: failed ? 'failed: ' + (e.Reason || '') : (e.Result !== undefined ? 'result ' + shortJSON(e.Result, 80) : 'completed'),
        });
        break;
      }
      case 'TaskScheduled':
      case 'SubOrchestrationInstanceCreated': {
        const sub = e.EventType.startsWith('Sub');
        rows.push({
          kind: sub ? 'sub' : 'act', label: (e.Name || 'activity') + (sub && e.InstanceId ? ` (${e.InstanceId})` : ''),
          start: ts, end: done ? runEnd ?? ts : now, state: done ? 'cancelled' : 'pending', detail: done ? 'never completed' : 'running',
        });
        break;
      }
      case 'TimerCreated': {
        const fireAt = ms(e.FireAt) ?? ts;
        const ok = fired.has(e.TimerId);
        rows.push({
          kind: 'timer', label: 'timer' + (e.TimerId !== undefined ? ` #${e.TimerId}` : ''), start: ts, end: fireAt,
          state: ok ? 'done' : done ? 'cancelled' : 'pending', detail: (ok ? 'fired at ' : 'fires at ') + formatTime(fireAt),
        });
        break;
      }
      case 'EventRaised':
        rows.push({ kind: 'event', label: 'event ' + (e.Name || ''), start: ts, end: ts, state: 'done', detail: e.Input !== undefined ? 'data ' + shortJSON(e.Input, 80) : 'received' });
        break;
      case 'EventSent':
        rows.push({ kind: 'event', label: 'sent ' + (e.Name || '') + (e.InstanceId ? ` → ${e.InstanceId}` : ''), start: ts, end: ts, state: 'done', detail: 'sent' });
        break;
      case 'ExecutionSuspended':
      case 'ExecutionResumed':
      case 'ExecutionRewound':
        rows.push({ kind: 'event', label: e.EventType.replace('Execution', '').toLowerCase(), start: ts, end: ts, state: 'done', detail: e.Reason || '' });
        break;
      default:
        break;
    }
  }
  return rows.filter((r) => r.start !== null && r.end !== null);
}

function el(name, attrs, text) {
  const n = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = text;
  return n;
}

const STEPS = [100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3];

function tickLabel(d, step) {
  if (step < 1000) return (d / 1000).toFixed(1) + 's';
  if (step < 60e3) return Math.round(d / 1000) + 's';
  if (step < 3600e3) return Math.round(d / 60e3) + 'm';
  return Math.round(d / 3600e3) + 'h';
}

/** Renders rows as an SVG element (or a note when there are none). */
export function renderGantt(container, history, runtimeStatus, now = Date.now()) {
  let rows = buildRows(history || [], runtimeStatus, now);
  if (rows.length === 0) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = 'No history yet.';
    container.replaceChildren(p);
    return;
  }
  let more = 0;
  if (rows.length > MAX_ROWS) {
    more = rows.length - MAX_ROWS;
    rows = rows.slice(0, MAX_ROWS);
  }
  // Timestamps without fractions of a second cannot tell 0 from 900 ms.
  const coarse = !(history || []).some((e) => /\.\d/.test(e.Timestamp || ''));
  const dur = (d) => (coarse && d < 1000 ? '< 1 s' : formatDuration(d));
  const t0 = Math.min(...rows.map((r) => r.start));
  let t1 = Math.max(...rows.map((r) => Math.max(r.end, r.start)));
  if (t1 - t0 < 1000) t1 = t0 + 1000;
  const span = t1 - t0;

  const W = 960, labelW = 210, pad = 18, axisH = 26, rowH = 24, barH = 14;
  const plotW = W - labelW - pad;
  const H = axisH + rows.length * rowH + 8;
  const x = (t) => labelW + ((t - t0) / span) * plotW;

  const svg = el('svg', {
    viewBox: `0 0 ${W} ${H}`, width: '100%', role: 'img', class: 'gantt',
    'aria-label': `Timeline of ${rows.length} history items over ${formatDuration(span)}`,
    preserveAspectRatio: 'xMinYMin meet',
  });
  svg.append(el('title', {}, `History timeline, from ${formatTime(t0)}`));

  // Axis, with ticks relative to the first event.
  const step = STEPS.find((s) => span / s <= 8 && (!coarse || s >= 1000)) || STEPS[STEPS.length - 1];
  const axis = el('g', { class: 'axis' });
  axis.append(el('text', { x: 8, y: 17, class: 'axis-start' }, formatTime(t0)));
  for (let d = 0; d <= span + 1; d += step) {
    const xx = x(t0 + d);
    axis.append(el('line', { x1: xx, x2: xx, y1: axisH - 6, y2: H - 4, class: 'grid' }));
    axis.append(el('text', { x: xx, y: 17, 'text-anchor': d === 0 ? 'start' : 'middle', class: 'tick' }, '+' + tickLabel(d, step)));
  }
  svg.append(axis);

  rows.forEach((r, i) => {
    const y = axisH + i * rowH;
    const g = el('g', { class: `row kind-${r.kind} state-${r.state}`, 'data-testid': 'gantt-row', 'data-kind': r.kind });
    if (i % 2 === 0) g.append(el('rect', { x: 0, y, width: W, height: rowH, class: 'stripe' }));
    const label = r.label.length > 30 ? r.label.slice(0, 29) + '…' : r.label;
    g.append(el('text', { x: 8, y: y + rowH / 2 + 4, class: 'label' }, label));
    const length = Math.max(0, r.end - r.start);
    const tip = `${r.label}: ${formatTime(r.start)}` + (r.kind === 'event' ? '' : ` → ${formatTime(r.end)} (${dur(length)})`) + (r.detail ? ` — ${r.detail}` : '');
    g.append(el('title', {}, tip));
    const by = y + (rowH - barH) / 2;
    if (r.kind === 'event') {
      const cx = x(r.start), cy = y + rowH / 2, s = 6;
      g.append(el('polygon', { points: `${cx},${cy - s} ${cx + s},${cy} ${cx},${cy + s} ${cx - s},${cy}`, class: 'marker' }));
    } else {
      const bx = x(r.start);
      const bw = Math.max(4, x(r.end) - bx);
      g.append(el('rect', { x: bx, y: by, width: bw, height: barH, rx: 3, class: 'bar' }));
      const text = dur(length) + (r.state === 'pending' ? ' …' : '');
      const tx = bx + bw + 6;
      if (tx + 60 < W) g.append(el('text', { x: tx, y: y + rowH / 2 + 4, class: 'dur' }, text));
    }
    svg.append(g);
  });

  if (!isTerminal(runtimeStatus) && now >= t0 && now <= t1) {
    svg.append(el('line', { x1: x(now), x2: x(now), y1: axisH - 6, y2: H - 4, class: 'now' }));
  }
  const nodes = [svg];
  if (more) {
    const p = document.createElement('p');
    p.className = 'muted';
    p.textContent = `…and ${more} more; see the events below.`;
    nodes.push(p);
  }
  container.replaceChildren(...nodes);
}
