import { defineConfig } from 'vitest/config';

// Native engines run in child processes (forks), two at a time: the machine has 2 cores, and each
// engine is given a single llama.cpp thread (more threads than cores makes llama.cpp crawl).
export default defineConfig({
  test: {
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    include: ['test/**/*.test.ts'],
    // One temp folder per run, removed at its end (test/global-tmp.ts).
    globalSetup: ['test/global-tmp.ts'],
  },
});
