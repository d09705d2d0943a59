// A stand-in for an anywidget model (the shape `initialize` and `render` get): get, set
// with change events, on/off, send (recorded), and `receive` for a kernel's message.
export class FakeModel {
  constructor(state = {}) {
    this.state = { ...state };
    this.handlers = new Map();
    this.sent = [];
  }

  get(key) {
    return this.state[key];
  }

  set(key, value) {
    const changed = this.state[key] !== value;
    this.state[key] = value;
    if (changed) this.emit(`change:${key}`, value);
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name).add(fn);
  }

  off(name, fn) {
    this.handlers.get(name)?.delete(fn);
  }

  emit(name, ...args) {
    for (const fn of [...(this.handlers.get(name) ?? [])]) fn(...args);
  }

  send(msg) {
    this.sent.push(msg);
  }

  save_changes() {
    throw new Error("the front end must not write the model back to the kernel");
  }

  receive(msg) {
    this.emit("msg:custom", msg);
  }

  listeners(name) {
    return this.handlers.get(name)?.size ?? 0;
  }
}
