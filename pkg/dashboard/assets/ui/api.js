// The Durable Functions HTTP API, as the dashboard calls it. The API key,
// when there is one, lives in sessionStorage and rides on every request:
// as the x-functions-key header, or as ?code= where headers cannot be set
// (EventSource).

const meta = document.querySelector('meta[name="jetflow-api"]');
export const API_BASE = (meta && meta.content) || '/runtime/webhooks/durabletask/';

const KEY_ITEM = 'jetflow.apiKey';

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM) || '';
  } catch {
    return '';
  }
}

export function setKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_ITEM, key);
    else sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // Storage is off: the key lasts until the page is left.
  }
  window.dispatchEvent(new CustomEvent('jetflow:key'));
}

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

/** Builds an absolute API URL from a path below the API base and a query object. */
export function apiURL(path, query) {
  const url = new URL(API_BASE + path, window.location.href);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, String(v));
  }
  return url;
}

/** The path segment of an instance. */
export function instancePath(id) {
  return 'instances/' + encodeURIComponent(id);
}

/**
 * Calls the API. body, if given, is JSON text. Resolves to
 * {status, data, headers}; rejects with ApiError for a non-2xx answer. A 401
 * also fires a 'jetflow:unauthorized' event on window.
 */
export async function call(method, path, { query, body, headers, signal } = {}) {
  const h = { Accept: 'application/json', ...(headers || {}) };
  const key = getKey();
  if (key) h['x-functions-key'] = key;
  const init = { method, headers: h, cache: 'no-store', signal };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = body;
  }
  let res;
  try {
    res = await fetch(apiURL(path, query), init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, 'the server cannot be reached (' + (err && err.message ? err.message : err) + ')');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!res.ok && res.status !== 304) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent('jetflow:unauthorized'));
    const msg = data && typeof data === 'object' && data.message ? data.message : (res.statusText || 'request failed');
    throw new ApiError(res.status, res.status + ' ' + msg, data);
  }
  return { status: res.status, data, headers: res.headers };
}

/** The revision in an ETag header ("12" → 12), or 0. */
export function revisionOf(headers) {
  const etag = headers && headers.get('ETag');
  const n = etag ? parseInt(etag.replace(/"/g, ''), 10) : NaN;
  return Number.isFinite(n) ? n : 0;
}

/** The URL of an instance's watch stream, with the key as ?code=. */
export function watchURL(id) {
  const key = getKey();
  return apiURL(instancePath(id) + '/watch', key ? { code: key } : {}).toString();
}

export const TERMINAL = new Set(['Completed', 'Failed', 'Terminated']);
export const STATUSES = ['Pending', 'Running', 'Suspended', 'Completed', 'Failed', 'Terminated', 'ContinuedAsNew'];

export function isTerminal(runtimeStatus) {
  return TERMINAL.has(runtimeStatus);
}
