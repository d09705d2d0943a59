// Bundles the widget front end into the Python package (nbstream/static/).
import * as esbuild from "esbuild";
import { options } from "./bundle.mjs";

const entries = ["src/reply.js", "src/chat.js"];
await esbuild.build({ ...options, entryPoints: entries, outdir: "../nbstream/static" });
console.log(`built ${entries.join(", ")} into nbstream/static/`);
