// Bundles the widget front end into the Python package (nbstream/static/).
import * as esbuild from "esbuild";

const entries = ["src/reply.js", "src/chat.js"];
await esbuild.build({
  entryPoints: entries,
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  outdir: "../nbstream/static",
  logLevel: "warning",
});
console.log(`built ${entries.join(", ")} into nbstream/static/`);
