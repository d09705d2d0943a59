// For tests/test_render.py: reads JSON lines {"markdown": "…", "allowImages": false} on
// stdin and writes {"html": "…"} (md.js's HTML, before DOMPurify) or {"error": "…"}.
// md.js is bundled first with the settings of the widget bundles (bundle.mjs), and runs
// in a jsdom document: it decodes entities with the HTML parser, as in the browser.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";
import { JSDOM } from "jsdom";
import { options } from "../bundle.mjs";

globalThis.document = new JSDOM("").window.document;

const dir = mkdtempSync(join(tmpdir(), "nbstream-md-"));
const out = join(dir, "md.mjs");
await esbuild.build({
  ...options,
  entryPoints: [fileURLToPath(new URL("../src/md.js", import.meta.url))],
  outfile: out,
  platform: "node",
});
const { toHtml } = await import(pathToFileURL(out).href);
rmSync(dir, { recursive: true, force: true });

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let reply;
  try {
    const { markdown, allowImages } = JSON.parse(line);
    reply = { html: toHtml(markdown, { allowImages }) };
  } catch (e) {
    reply = { error: String(e && e.stack ? e.stack : e) };
  }
  process.stdout.write(`${JSON.stringify(reply)}\n`);
});
