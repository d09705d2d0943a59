import { describe, expect, it } from "vitest";
import { makeScheduler, TextStream } from "../src/text_stream.js";

describe("TextStream", () => {
  it("waits for a snapshot before applying deltas", () => {
    const s = new TextStream();
    expect(s.delta({ seq: 1, text: "Hel" })).toBe("waiting");
    expect(s.text).toBe("");
    s.snapshot({ seq: 1, text: "Hel" });
    expect(s.delta({ seq: 2, text: "lo" })).toBe("applied");
    expect(s.text).toBe("Hello");
  });

  it("ignores a duplicate delta and does not repeat its text", () => {
    const s = new TextStream();
    s.snapshot({ seq: 0, text: "" });
    s.delta({ seq: 1, text: "a" });
    expect(s.delta({ seq: 1, text: "a" })).toBe("duplicate");
    expect(s.text).toBe("a");
  });

  it("reports a gap and applies nothing until the next snapshot", () => {
    const s = new TextStream();
    s.snapshot({ seq: 0, text: "" });
    s.delta({ seq: 1, text: "a" });
    expect(s.delta({ seq: 3, text: "c" })).toBe("gap");
    expect(s.delta({ seq: 4, text: "d" })).toBe("waiting");
    expect(s.text).toBe("a");
    s.snapshot({ seq: 4, text: "abcd" });
    expect(s.delta({ seq: 5, text: "e" })).toBe("applied");
    expect(s.text).toBe("abcde");
  });

  it("keeps reasoning apart from the reply text", () => {
    const s = new TextStream();
    s.snapshot({ seq: 0, text: "" });
    s.delta({ seq: 1, reasoning: "think" });
    s.delta({ seq: 2, text: "answer" });
    expect(s.reasoning).toBe("think");
    expect(s.text).toBe("answer");
  });

  it("does not go back to an older snapshot", () => {
    const s = new TextStream();
    s.snapshot({ seq: 5, text: "newer" });
    expect(s.snapshot({ seq: 3, text: "old" })).toBe(false);
    expect(s.text).toBe("newer");
  });

  it("keeps astral characters whole (seq, not character offsets)", () => {
    const s = new TextStream();
    s.snapshot({ seq: 0, text: "" });
    s.delta({ seq: 1, text: "😊" });
    s.delta({ seq: 2, text: "ok" });
    expect(s.text).toBe("😊ok");
  });
});

describe("makeScheduler", () => {
  it("paints at most once per frame and at most every interval, with a trailing paint", () => {
    let t = 0;
    const frames = [];
    const raf = (cb) => frames.push(cb);
    let paints = 0;
    const sch = makeScheduler(() => paints++, { interval: 50, raf, now: () => t });
    sch.request();
    sch.request();
    expect(frames.length).toBe(1);
    frames.shift()(); // first frame paints
    expect(paints).toBe(1);
    t = 10;
    sch.request();
    frames.shift()(); // too soon: re-schedules instead of painting
    expect(paints).toBe(1);
    expect(frames.length).toBe(1);
    t = 60;
    frames.shift()(); // trailing paint happens
    expect(paints).toBe(2);
    expect(sch.pending).toBe(false);
  });

  it("paints at once when asked to (the final text)", () => {
    let t = 0;
    const frames = [];
    let paints = 0;
    const sch = makeScheduler(() => paints++, { interval: 50, raf: (cb) => frames.push(cb), now: () => t });
    sch.request();
    frames.shift()();
    t = 1;
    sch.request(true);
    frames.shift()();
    expect(paints).toBe(2);
  });
});
