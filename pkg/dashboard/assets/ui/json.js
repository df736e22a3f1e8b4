// A pretty, highlighted JSON view built from DOM nodes (never innerHTML,
// so values cannot inject markup).

function span(cls, text) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}

function build(out, value, indent) {
  const pad = '  '.repeat(indent);
  if (value === null || value === undefined) {
    out.push(span('j-null', 'null'));
  } else if (typeof value === 'string') {
    out.push(span('j-str', JSON.stringify(value)));
  } else if (typeof value === 'number') {
    out.push(span('j-num', String(value)));
  } else if (typeof value === 'boolean') {
    out.push(span('j-bool', String(value)));
  } else if (Array.isArray(value)) {
    if (value.length === 0) {
      out.push('[]');
      return;
    }
    out.push('[\n');
    value.forEach((v, i) => {
      out.push(pad + '  ');
      build(out, v, indent + 1);
      out.push(i < value.length - 1 ? ',\n' : '\n');
    });
    out.push(pad + ']');
  } else {
    const keys = Object.keys(value);
    if (keys.length === 0) {
      out.push('{}');
      return;
    }
    out.push('{\n');
    keys.forEach((k, i) => {
      out.push(pad + '  ');
      out.push(span('j-key', JSON.stringify(k)));
      out.push(': ');
      build(out, value[k], indent + 1);
      out.push(i < keys.length - 1 ? ',\n' : '\n');
    });
    out.push(pad + '}');
  }
}

/** Replaces el's content with value as pretty JSON. */
export function renderJSON(el, value) {
  const parts = [];
  build(parts, value, 0);
  el.replaceChildren(...parts.map((p) => (typeof p === 'string' ? document.createTextNode(p) : p)));
  el.dataset.json = JSON.stringify(value === undefined ? null : value);
}

/** A one-line, shortened JSON text for tables. */
export function shortJSON(value, max = 60) {
  if (value === null || value === undefined) return '';
  const s = typeof value === 'string' ? value : JSON.stringify(value);
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

/** Parses JSON text; empty text is undefined. Throws a readable error. */
export function parseJSONInput(text, what) {
  const t = (text || '').trim();
  if (t === '') return undefined;
  try {
    return JSON.parse(t);
  } catch (err) {
    throw new Error(what + ' is not valid JSON: ' + err.message);
  }
}
