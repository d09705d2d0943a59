// Ordered text deltas with gap detection. Pure: no DOM, no widget model.
//
// The kernel numbers every delta message (seq 1, 2, 3 …). A view applies them in order;
// one that starts late, or misses one (slow first render, page reload), asks the kernel
// for a snapshot (the whole text so far and its seq) and carries on from there.

export class TextStream {
  constructor() {
    this.text = "";
    this.reasoning = "";
    this.notes = []; // how each later attempt took over ("… continued by llama3")
    this.superseded = []; // replies a restart replaced
    this.seq = -1; // -1: no snapshot yet, deltas are not applicable
  }

  // Apply a snapshot {seq, text, reasoning, notes?, superseded?}. Returns true if it
  // changed anything.
  snapshot(msg) {
    if (msg.seq < this.seq) return false; // older than what we have
    this.seq = msg.seq;
    this.text = msg.text ?? "";
    this.reasoning = msg.reasoning ?? "";
    this.notes = msg.notes ?? [];
    this.superseded = msg.superseded ?? [];
    return true;
  }

  // Apply a delta {seq, text?, reasoning?, attempt?: {note, superseded}}: another
  // model took over (a restart sets the text so far aside and starts again).
  // Returns "applied", "duplicate", "waiting" (no snapshot yet) or "gap".
  delta(msg) {
    if (this.seq < 0) return "waiting";
    if (msg.seq <= this.seq) return "duplicate";
    if (msg.seq !== this.seq + 1) {
      this.seq = -1; // forget until the snapshot that will be asked for arrives
      return "gap";
    }
    this.seq = msg.seq;
    if (msg.attempt) {
      this.notes = [...this.notes, msg.attempt.note];
      if (msg.attempt.superseded) {
        this.superseded = [...this.superseded, this.text];
        this.text = "";
      }
    }
    if (msg.text) this.text += msg.text;
    if (msg.reasoning) this.reasoning += msg.reasoning;
    return "applied";
  }
}

// Calls `fn` at most once per animation frame, and `slow` at most every `interval` ms
// (with a trailing call so the last change is always painted).
export function makeScheduler(fn, { interval = 50, raf = globalThis.requestAnimationFrame,
                                    now = () => performance.now() } = {}) {
  let frame = null;
  let last = -Infinity;
  let force = false;
  const tick = () => {
    frame = null;
    const t = now();
    if (force || t - last >= interval) {
      last = t;
      force = false;
      fn();
    } else {
      frame = (raf ?? ((cb) => setTimeout(cb, 16)))(tick);
    }
  };
  return {
    request(immediate = false) {
      if (immediate) force = true;
      if (frame === null) frame = (raf ?? ((cb) => setTimeout(cb, 16)))(tick);
    },
    get pending() { return frame !== null; },
  };
}
