/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `npm run dev` serves the UI with hot reload and forwards the API to a running
// `cdcsync serve` (CDCSYNC_API, default http://127.0.0.1:8080). Production builds are
// static files in dist/, served by cdcsync itself at `/`.
const api = process.env.CDCSYNC_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  plugins: [react()],
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1200 },
  server: {
    proxy: {
      "/api": { target: api, changeOrigin: false },
      "/health": api,
      "/metrics": api,
    },
  },
  test: { environment: "node", include: ["src/**/*.test.ts"] },
});
