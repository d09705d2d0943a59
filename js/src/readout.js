// The usage readout line and the conversation totals: twins of readout_text
// (nbstream/_notebook/readout.py) and totals_text (nbstream/_notebook/totals.py), which
// tests/test_cost.py runs side by side on the same data.
const fmtS = (s) => (s == null ? "-" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

// Dollars with two significant digits below ten cents ($0.0012), else cents ($1.25).
export function fmtUsd(usd) {
  if (!(usd > 0) || !Number.isFinite(usd)) return "$0.00";
  const decimals = Math.min(10, Math.max(2, 1 - Math.floor(Math.log10(usd))));
  return `$${usd.toFixed(decimals)}`;
}

function cacheText(r) {
  const said = [];
  if (r.cached_input_tokens) said.push(`${r.cached_input_tokens} cached`);
  if (r.cache_write_tokens) said.push(`${r.cache_write_tokens} written to cache`);
  return said.length ? ` (${said.join(", ")})` : "";
}

export function readoutText(r) {
  if (!r) return "";
  const parts = [r.status ?? ""];
  if (r.models && r.models.length) parts.push(r.models.join(" → ")); // who wrote it
  if (r.ttft_s != null) parts.push(`first token ${fmtS(r.ttft_s)}`);
  if (r.input_tokens != null || r.output_tokens != null) {
    const inEst = (r.input_estimated ?? r.estimated) ? "~" : "";
    const outEst = (r.output_estimated ?? r.estimated) ? "~" : "";
    parts.push(
      `${inEst}${r.input_tokens ?? "?"} in${cacheText(r)} · ` +
        `${outEst}${r.output_tokens ?? "?"} out tokens` +
        (inEst || outEst ? " (estimated)" : ""),
    );
  }
  if ("cost_usd" in r && r.status !== "streaming") {
    if (r.cost_usd == null) parts.push("cost unknown");
    else parts.push(`${r.cost_estimated ? "~" : ""}${fmtUsd(r.cost_usd)}`);
  }
  if (r.tokens_per_s != null) parts.push(`${r.tokens_per_s.toFixed(1)} tok/s`);
  if (r.elapsed_s != null) parts.push(fmtS(r.elapsed_s));
  if (r.finish_reason) parts.push(`finish: ${r.finish_reason}`);
  return parts.filter(Boolean).join(" · ");
}

const fmtTokens = (n) => (n >= 10000 ? `${(n / 1000).toFixed(1)}k` : String(n));

function costTotal(t) {
  if (!("cost_usd" in t)) return "";
  const known = t.cost_known || 0;
  const unknown = t.cost_unknown || 0;
  if (!known) return unknown ? "cost unknown" : "";
  const sum = `${t.cost_estimated ? "~" : ""}${fmtUsd(t.cost_usd)}`;
  if (!unknown) return sum;
  return `${sum} + ${unknown} ${unknown === 1 ? "turn" : "turns"} of unknown cost`;
}

export function totalsText(t) {
  if (!t || !t.turns) return "";
  const est = t.estimated ? "~" : "";
  const parts = [
    `${t.turns} ${t.turns === 1 ? "turn" : "turns"}`,
    `${est}${fmtTokens(t.input_tokens)} in · ${est}${fmtTokens(t.output_tokens)} out tokens`,
    costTotal(t),
    `${t.elapsed_s.toFixed(1)} s`,
  ];
  return parts.filter(Boolean).join(" · ");
}
