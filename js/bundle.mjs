// The esbuild settings every bundle of md.js shares: the widget bundles (build.mjs) and
// the node build that tests/test_render.py compares with the kernel's renderer
// (test/render_cli.mjs), so the tests run the code that ships.
import { fileURLToPath } from "node:url";

const ENTITIES = fileURLToPath(new URL("./src/entities.js", import.meta.url));
const LINKIFY = fileURLToPath(new URL("./src/no_linkify.js", import.meta.url));

// markdown-it's "entities" becomes the browser's own decoder (src/entities.js: its
// 31 KB table is not bundled), and the linkify-it it builds at start-up (linkify is off)
// a stub. Bare names only, as markdown-it imports them.
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
  plugins: [replace],
  logLevel: "warning",
};

export const aliases = [
  { find: /^entities$/, replacement: ENTITIES },
  { find: /^linkify-it$/, replacement: LINKIFY },
];
