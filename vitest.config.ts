import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file in its own process: agents own native threads and file descriptors.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Two cores: run files one at a time so that timing-sensitive transfers are not starved.
    fileParallelism: false,
  },
});
