import { defineConfig } from 'vitest/config'

// `npm run test:slow`: the heavy suites (swap, long writer loops, container
// engines), kept out of `npm test`. Files run one at a time: they load the
// machine or measure it.
export default defineConfig({
  test: {
    include: ['test/slow/**/*.test.ts'],
    globalSetup: ['test/setup/global.ts'],
    testTimeout: 600_000,
    hookTimeout: 600_000,
    pool: 'forks',
    fileParallelism: false,
    passWithNoTests: true,
  },
})
