import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // One embedded Postgres for the whole run; each integration file gets fresh databases cloned from a template.
    globalSetup: ['tests/helpers/global-setup.ts'],
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});
