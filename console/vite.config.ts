// The console is served by `vt server` at /app/ (crates/vt-console embeds what this builds).
// VT_CONSOLE_OUT: where crates/vt-console's build script wants the assets (default: dist/).
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "/app/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: process.env.VT_CONSOLE_OUT ?? "dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    reportCompressedSize: false,
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
