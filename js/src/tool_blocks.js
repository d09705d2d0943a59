// Tool calls in a reply (the %%chat live view and the chat panel): one compact,
// collapsible block per call (name, arguments, status and time on one line; the
// arguments and the result inside), placed in the reply's text where the call was made.
// Every text in a block is set with textContent: inert, whatever the model or the tool
// wrote. The kernel sends blocks as plain data (nbstream/_notebook/toolblocks.py); the
// final output draws the same block in HTML (nbstream/_notebook/toolview.py).

export const STATUS = { // keep in step with toolview.py
  streaming: "…",
  approval: "waiting for approval",
  running: "running…",
  complete: "done",
  error: "error",
  denied: "denied",
  cancelled: "stopped",
  background: "stopped (still running in the background)",
  skipped: "not run (step limit)",
  "not run": "not run",
};
const SUMMARY_ARGS = 80;

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== false && v != null) node.setAttribute(k, v === true ? "" : v);
  }
  node.append(...children);
  return node;
}

const squash = (s, limit) => {
  const t = String(s ?? "").split(/\s+/).filter(Boolean).join(" ");
  return t.length <= limit ? t : `${t.slice(0, limit - 1)}…`;
};

const fmtTime = (s) => (typeof s !== "number" ? "" : s < 1 ? `${Math.round(s * 1000)} ms`
  : `${s.toFixed(2)} s`);

export function blockSummary(b) {
  const status = String(b.status ?? "");
  const parts = [`${b.name || "?"}(${squash(b.arguments, SUMMARY_ARGS)})`, STATUS[status] ?? status];
  const took = fmtTime(b.elapsed_s);
  if (took && !["streaming", "approval", "running"].includes(status)) parts.push(took);
  return parts.filter(Boolean).join(" · ");
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return String(args ?? "");
  }
}

// One block. `onAnswer(id, ok)`: the Approve / Deny buttons (shown while the call waits
// for approval). Returns {root, update(block)}.
export function toolBlock(block, onAnswer = null) {
  const line = h("summary", { class: "nbs-tool-line" });
  const args = h("code");
  const result = h("code");
  const resultLabel = h("div", { class: "nbs-tool-label" }, "result");
  const resultBox = h("pre", {}, result);
  const details = h("details", { class: "nbs-tool-details" }, line,
    h("div", { class: "nbs-tool-label" }, "arguments"), h("pre", {}, args), resultLabel, resultBox);
  const approve = h("button", { class: "nbs-approve", type: "button" }, "Approve");
  const deny = h("button", { class: "nbs-deny", type: "button" }, "Deny");
  const ask = h("div", { class: "nbs-tool-ask", role: "group", "aria-label": "Run this call?" },
    approve, deny);
  const root = h("div", { class: "nbs-tool" }, details, ask);
  let current = block;
  const answer = (ok) => {
    approve.disabled = true;
    deny.disabled = true;
    if (onAnswer) onAnswer(current.id, ok);
  };
  approve.addEventListener("click", () => answer(true));
  deny.addEventListener("click", () => answer(false));

  function update(b) {
    current = b;
    root.dataset.status = b.status ?? "";
    root.dataset.key = b.key ?? "";
    line.textContent = blockSummary(b);
    args.textContent = pretty(b.arguments);
    const has = b.result != null;
    resultLabel.hidden = !has;
    resultBox.hidden = !has;
    resultLabel.textContent = b.is_error ? "error" : "result";
    result.textContent = has ? String(b.result) : "";
    const asking = b.status === "approval" && !!onAnswer;
    ask.hidden = !asking;
    if (asking) {
      approve.setAttribute("aria-label", `Approve ${b.name}`);
      deny.setAttribute("aria-label", `Deny ${b.name}`);
    } else {
      approve.disabled = false;
      deny.disabled = false;
    }
  }
  update(block);
  return { root, update };
}

// The text of a reply cut into segments at the tool blocks: [text, blocks made there,
// text, …]. `makeText(div)` returns the renderer of one text segment, {render(text)};
// only a segment whose text changed is rendered again (while a reply streams, that is
// the last one).
export class Segments {
  constructor(container, makeText, onAnswer = null) {
    this.container = container;
    this.makeText = makeText;
    this.onAnswer = onAnswer;
    this.texts = []; // {div, r, shown}
    this.blocks = new Map(); // key -> {root, update, data}
  }

  update(text, blocks) {
    const end = text.length;
    const order = [...blocks].map((b, i) => ({ b, i, at: Math.max(0, Math.min(end, b.at | 0)) }))
      .sort((x, y) => x.at - y.at || x.i - y.i);
    const cuts = [...new Set(order.map((o) => o.at))];
    const starts = [0, ...cuts];
    const wanted = [];
    starts.forEach((start, i) => {
      const stop = i < cuts.length ? cuts[i] : end;
      let seg = this.texts[i];
      if (!seg) {
        const div = document.createElement("div");
        div.className = "nbs-segment";
        seg = this.texts[i] = { div, r: this.makeText(div), shown: null };
      }
      const piece = text.slice(start, stop);
      if (piece !== seg.shown) {
        seg.r.render(piece);
        seg.shown = piece;
      }
      seg.div.hidden = !piece.trim();
      wanted.push(seg.div);
      for (const o of order) {
        if (o.at !== (i < cuts.length ? cuts[i] : -1)) continue;
        let ui = this.blocks.get(o.b.key);
        if (!ui) {
          ui = toolBlock(o.b, this.onAnswer);
          this.blocks.set(o.b.key, ui);
        } else if (ui.data !== o.b) {
          ui.update(o.b);
        }
        ui.data = o.b;
        wanted.push(ui.root);
      }
    });
    for (const seg of this.texts.splice(starts.length)) seg.div.remove();
    const keep = new Set(wanted);
    for (const [key, ui] of this.blocks) {
      if (!keep.has(ui.root)) {
        ui.root.remove();
        this.blocks.delete(key);
      }
    }
    let prev = null;
    for (const node of wanted) {
      const next = prev ? prev.nextSibling : this.container.firstChild;
      if (node !== next) this.container.insertBefore(node, next);
      prev = node;
    }
  }
}

// Blocks by key, kept from the kernel's {type: "tool", block} messages and snapshots.
export class ToolState {
  constructor() {
    this.byKey = new Map();
  }

  get list() {
    return [...this.byKey.values()];
  }

  put(block) {
    if (!block || typeof block.key !== "string") return false;
    this.byKey.set(block.key, block);
    return true;
  }

  reset(blocks) {
    this.byKey.clear();
    for (const b of blocks ?? []) this.put(b);
  }
}
