// The readout line and the totals (their Python twins are checked against these in
// tests/test_cost.py, on the same data).
import { describe, expect, it } from "vitest";
import { fmtUsd, readoutText, totalsText } from "../src/readout.js";

const done = {
  status: "complete",
  ttft_s: 0.24,
  input_tokens: 2421,
  output_tokens: 48,
  input_estimated: false,
  output_estimated: false,
  cached_input_tokens: 1800,
  cache_write_tokens: 600,
  tokens_per_s: 61.3,
  elapsed_s: 1.02,
  finish_reason: "stop",
  cost_usd: 0.0012,
  cost_estimated: false,
};

describe("readoutText", () => {
  it("shows the cost and the cached tokens of a finished reply", () => {
    expect(readoutText(done)).toBe(
      "complete · first token 240 ms · 2421 in (1800 cached, 600 written to cache) · " +
        "48 out tokens · $0.0012 · 61.3 tok/s · 1.02 s · finish: stop",
    );
  });

  it("says the cost is unknown rather than guess, and marks an estimated one", () => {
    expect(readoutText({ ...done, cost_usd: null })).toContain(" · cost unknown · ");
    const est = { ...done, input_estimated: true, output_estimated: true, cost_estimated: true };
    expect(readoutText(est)).toContain(" · ~48 out tokens (estimated) · ~$0.0012 · ");
  });

  it("marks only the counts that are estimates while a reply streams, with no cost", () => {
    const live = { ...done, status: "streaming", output_estimated: true, cost_usd: null };
    const line = readoutText(live);
    expect(line).toContain(" · 2421 in (1800 cached, 600 written to cache) · ~48 out tokens (estimated)");
    expect(line).not.toContain("cost");
  });
});

describe("fmtUsd and totalsText", () => {
  it("writes dollars with two significant digits below ten cents", () => {
    expect([0.0012, 0.05, 1.234, 5.7e-7, 0].map(fmtUsd)).toEqual([
      "$0.0012", "$0.050", "$1.23", "$0.00000057", "$0.00",
    ]);
  });

  it("adds up the known costs and counts the unknown ones", () => {
    const t = {
      turns: 3, input_tokens: 12000, output_tokens: 300, estimated: false, elapsed_s: 4.5,
      cost_usd: 0.0042, cost_known: 2, cost_unknown: 1, cost_estimated: false,
    };
    expect(totalsText(t)).toBe(
      "3 turns · 12.0k in · 300 out tokens · $0.0042 + 1 turn of unknown cost · 4.5 s",
    );
    expect(totalsText({ ...t, cost_known: 0, cost_unknown: 3 })).toContain(" · cost unknown · ");
  });
});
