// The esbuild settings every bundle of md.js shares: the widget bundles (build.mjs) and
// the node build that tests/test_render.py compares with the kernel's renderer
// (test/render_cli.mjs), so the tests run the code that ships.
import { fileURLToPath } from "node:url";

const ENTITIES = fileURLToPath(new URL("./src/entities.js", import.meta.url));
const LINKIFY = fileURLToPath(new URL("./src/no_linkify.js", import.meta.url));

// Only the bare names, as markdown-it imports them ("entities/lib/decode.js", which the
// replacement itself imports, stays what it is).
const replace = {
  name: "nbstream-replace",
  setup(build) {
    build.onResolve({ filter: /^entities$/ }, () => ({ path: ENTITIES }));
    build.onResolve({ filter: /^linkify-it$/ }, () => ({ path: LINKIFY }));
  },
};

export const options = {
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  charset: "utf8", // the entity table as UTF-8, not \u escapes: 20 KB less
  plugins: [replace],
  logLevel: "warning",
};

export const aliases = [
  { find: /^entities$/, replacement: ENTITIES },
  { find: /^linkify-it$/, replacement: LINKIFY },
];
