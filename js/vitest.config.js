import { defineConfig } from "vitest/config";
import { aliases } from "./bundle.mjs";

export default defineConfig({
  resolve: { alias: aliases },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.js"],
    // through vite, so that its imports get the aliases of the bundles
    server: { deps: { inline: ["markdown-it"] } },
  },
});
