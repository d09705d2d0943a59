// The usage readout line: status, time to first token, tokens, tokens/s, elapsed, finish.
const fmtS = (s) => (s == null ? "–" : s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`);

export function readoutText(r) {
  if (!r) return "";
  const parts = [r.status ?? ""];
  if (r.models && r.models.length) parts.push(r.models.join(" → ")); // who wrote it
  if (r.ttft_s != null) parts.push(`first token ${fmtS(r.ttft_s)}`);
  if (r.input_tokens != null || r.output_tokens != null) {
    const est = r.estimated ? "~" : "";
    parts.push(`${est}${r.input_tokens ?? "?"} in · ${est}${r.output_tokens ?? "?"} out tokens`);
  }
  if (r.tokens_per_s != null) parts.push(`${r.tokens_per_s.toFixed(1)} tok/s`);
  if (r.elapsed_s != null) parts.push(fmtS(r.elapsed_s));
  if (r.finish_reason) parts.push(`finish: ${r.finish_reason}`);
  return parts.filter(Boolean).join(" · ");
}
