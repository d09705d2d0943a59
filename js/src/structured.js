// A structured reply (response_format=), live: the JSON value so far, as a growing
// table or tree. Pure DOM, no widget model.
//
// The view gets the reply's text as deltas (text_stream.js), as for any reply, and
// parses it here: the kernel sends nothing more. partialJSON reads a JSON prefix as
// the kernel's turn.partial does (nbstream/_core/structured.py, jiter's partial mode):
// an unfinished string is kept as far as it goes, a key appears once its value has
// started, a number only once it is complete (6 is not shown on the way to 61).
// js/test/partial_cases.json, written by the Python tests, holds both sides to that.
//
// JsonView draws a value into an element and then patches it as the value grows, so
// a paint costs what changed (plus the parse), not the whole table. The markup is the
// one the kernel writes for the saved output (nbstream/_notebook/structured_html.py):
// an object is a table of keys and values, an array of objects a table with a column
// per key, any other array a list, and every key and value is text (textContent).

const NUMBER_OR_WORD = /[0-9A-Za-z.+-]/;
const SPACE = /[ \t\n\r]/;
export const MAX_DEPTH = 24;

// The value of a JSON prefix, or undefined when there is none yet (or it is not JSON).
export function partialJSON(text) {
  const top = { safe: 0, state: "value", obj: false, close: "" };
  const stack = [];
  const frame = () => (stack.length ? stack[stack.length - 1] : top);
  let inString = false;
  let keyString = false;
  let token = -1; // where an unfinished number or word began
  let end = -1; // where the top-level value ended (what follows is not read)
  const done = (at) => {
    if (!stack.length) end = at;
    else {
      const f = frame();
      f.safe = at;
      f.state = "after";
    }
  };
  const n = text.length;
  let i = 0;
  while (i < n && end < 0) {
    const c = text[i];
    if (inString) {
      if (c === "\\") i += 2;
      else {
        if (c === '"') {
          inString = false;
          if (keyString) frame().state = "colon";
          else done(i + 1);
        }
        i += 1;
      }
      continue;
    }
    if (token >= 0) {
      if (NUMBER_OR_WORD.test(c)) {
        i += 1;
        continue;
      }
      token = -1;
      done(i);
      if (end >= 0) break;
    }
    const f = frame();
    if (c === "{" || c === "[") {
      stack.push({ safe: i + 1, state: c === "{" ? "key" : "value", obj: c === "{",
        close: c === "{" ? "}" : "]" });
    } else if (c === "}" || c === "]") {
      stack.pop();
      done(i + 1);
    } else if (c === ":") {
      f.state = "value";
    } else if (c === ",") {
      f.state = f.obj ? "key" : "value";
    } else if (c === '"') {
      inString = true;
      keyString = f.obj && f.state === "key";
    } else if (!SPACE.test(c)) {
      token = i;
    }
    i += 1;
  }
  let repaired;
  if (end >= 0) {
    repaired = text.slice(0, end);
  } else {
    const closers = stack.map((f) => f.close).reverse().join("");
    const word = token >= 0 ? text.slice(token) : "";
    if (inString && !keyString) repaired = closeString(text) + closers;
    else if (word === "true" || word === "false" || word === "null") repaired = text + closers;
    else repaired = text.slice(0, frame().safe) + closers;
  }
  if (!repaired.trim()) return undefined;
  try {
    return JSON.parse(repaired);
  } catch {
    return undefined;
  }
}

// An unfinished string value, closed: without a half-written escape, nor a high
// surrogate still waiting for its pair (as jiter leaves them out).
function closeString(s) {
  const half = /\\(u[0-9a-fA-F]{0,3})?$/.exec(s);
  if (half && escapes(s, half.index)) s = s.slice(0, half.index);
  const high = /\\u[dD][89abAB][0-9a-fA-F]{2}$/.exec(s);
  if (high && escapes(s, high.index)) s = s.slice(0, high.index);
  return `${s}"`;
}

// Whether the backslash at `at` starts an escape (it is not itself escaped).
function escapes(s, at) {
  let k = 0;
  while (at - 1 - k >= 0 && s[at - 1 - k] === "\\") k += 1;
  return k % 2 === 0;
}

// -- drawing ---------------------------------------------------------------------------

function h(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const kindOf = (v, depth) => {
  if (Array.isArray(v)) {
    if (!v.length) return "empty-array";
    if (depth >= MAX_DEPTH) return "deep";
    return v.every(isObject) ? "rows" : "array";
  }
  if (isObject(v)) {
    if (!Object.keys(v).length) return "empty-object";
    return depth >= MAX_DEPTH ? "deep" : "object";
  }
  if (typeof v === "string") return "string";
  if (typeof v === "number") return "number";
  return "literal";
};

// A drawn value: {el, kind, value, ...what patching it needs}.
function build(value, depth) {
  const kind = kindOf(value, depth);
  const node = { kind, value, depth };
  if (kind === "object") {
    node.el = h("table", "nbs-obj");
    node.body = node.el.appendChild(h("tbody"));
    node.rows = new Map();
  } else if (kind === "rows") {
    node.el = h("table", "nbs-rows");
    node.headRow = node.el.appendChild(h("thead")).appendChild(h("tr"));
    node.body = node.el.appendChild(h("tbody"));
    node.columns = [];
    node.items = [];
  } else if (kind === "array") {
    node.el = h("ol", "nbs-arr");
    node.el.setAttribute("start", "0");
    node.items = [];
  } else if (kind === "empty-array") {
    node.el = h("span", "nbs-empty", "[]");
  } else if (kind === "empty-object") {
    node.el = h("span", "nbs-empty", "{}");
  } else if (kind === "deep") {
    node.el = h("code", "nbs-deep", JSON.stringify(value));
  } else {
    node.el = h("span", `nbs-${kind === "string" ? "str" : kind === "number" ? "num" : "lit"}`,
      kind === "string" ? value : JSON.stringify(value));
  }
  patch(node, value, true);
  return node;
}

// The node shows `value` now: the same node patched, or a new one to put in its place.
function patch(node, value, fresh = false) {
  if (!fresh && node.value === value) return node;
  if (kindOf(value, node.depth) !== node.kind) return build(value, node.depth);
  node.value = value;
  const { kind } = node;
  if (kind === "object") {
    for (const [key, v] of Object.entries(value)) {
      let row = node.rows.get(key);
      if (!row) {
        const tr = node.body.appendChild(h("tr"));
        tr.append(h("th", "", key));
        const td = tr.appendChild(h("td"));
        row = { td, child: build(v, node.depth + 1) };
        td.append(row.child.el);
        node.rows.set(key, row);
      } else {
        replaceChild(row, patch(row.child, v));
      }
    }
  } else if (kind === "rows") {
    patchRows(node, value);
  } else if (kind === "array") {
    // the value only grows: the items before the last drawn one are as they were
    for (let i = Math.max(0, node.items.length - 1); i < value.length; i += 1) {
      if (i < node.items.length) replaceChild(node.items[i], patch(node.items[i].child, value[i]));
      else {
        const li = node.el.appendChild(h("li"));
        const child = build(value[i], node.depth + 1);
        li.append(child.el);
        node.items.push({ td: li, child });
      }
    }
  } else if (kind === "string") {
    node.el.textContent = value;
  } else if (kind === "deep") {
    node.el.textContent = JSON.stringify(value);
  } else if (kind === "number" || kind === "literal") {
    node.el.textContent = JSON.stringify(value);
  }
  return node;
}

function replaceChild(slot, next) {
  if (next !== slot.child) {
    slot.child.el.replaceWith(next.el);
    slot.child = next;
  }
}

function patchRows(node, items) {
  for (const item of items) {
    for (const key of Object.keys(item)) {
      if (node.columns.includes(key)) continue;
      node.columns.push(key);
      node.headRow.append(h("th", "", key));
      for (const row of node.items) row.tr.append(h("td")); // a new column: empty so far
    }
  }
  for (let i = Math.max(0, node.items.length - 1); i < items.length; i += 1) {
    let row = node.items[i];
    if (!row) {
      row = { tr: node.body.appendChild(h("tr")), cells: new Map() };
      for (let c = 0; c < node.columns.length; c += 1) row.tr.append(h("td"));
      node.items.push(row);
    }
    node.columns.forEach((key, c) => {
      if (!(key in items[i])) return;
      const td = row.tr.children[c];
      const cell = row.cells.get(key);
      if (!cell) {
        const child = build(items[i][key], node.depth + 2);
        td.replaceChildren(child.el);
        row.cells.set(key, { td, child });
      } else {
        replaceChild(cell, patch(cell.child, items[i][key]));
      }
    });
  }
}

// A value drawn into `host`, updated in place as it grows.
export class JsonView {
  constructor(host) {
    this.host = host;
    this.root = null;
  }

  update(value) {
    if (value === undefined) {
      this.reset();
      return;
    }
    const next = this.root ? patch(this.root, value) : build(value, 0);
    if (next !== this.root) {
      this.host.replaceChildren(next.el);
      this.root = next;
    }
  }

  reset() {
    this.root = null;
    this.host.replaceChildren();
  }
}

// The live part of a structured reply in `host`: the value so far, and its raw JSON
// (collapsed; filled only while open). `paint(text, {final, error})`: at the end the
// whole text is parsed as JSON (the value so far if it is not JSON), and `error` (why
// it did not validate) is shown under it.
export class StructuredLive {
  constructor(host) {
    this.wrap = h("div", "nbs-structured");
    this.valueHost = this.wrap.appendChild(h("div", "nbs-value"));
    this.error = this.wrap.appendChild(h("p", "nbs-parse-error"));
    this.error.hidden = true;
    this.raw = this.wrap.appendChild(h("details", "nbs-raw"));
    this.raw.append(h("summary", "", "JSON"));
    this.code = this.raw.appendChild(h("pre")).appendChild(h("code"));
    host.append(this.wrap);
    this.view = new JsonView(this.valueHost);
    this.text = "";
    this.onToggle = () => {
      if (this.raw.open) this.code.textContent = this.text;
    };
    this.raw.addEventListener("toggle", this.onToggle);
  }

  paint(text, { final = false, error = "" } = {}) {
    this.text = text;
    let value = final ? wholeJSON(text) : partialJSON(text);
    if (final && value === undefined) value = partialJSON(text);
    this.view.update(value);
    if (this.raw.open) this.code.textContent = text;
    this.error.hidden = !error;
    this.error.textContent = error ? `Not valid: ${error}` : "";
  }

  reset() {
    this.view.reset();
  }

  remove() {
    this.raw.removeEventListener("toggle", this.onToggle);
    this.wrap.remove();
  }
}

function wholeJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
