import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/slow/**', '**/node_modules/**'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Each test file gets its own IPC namespace from test/run.mjs only once;
    // files that create segments use keys of their own so they can run in parallel.
    pool: 'forks',
  },
})
