import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // `npm test` runs both projects; `npm run test:unit` runs pure code only, with no Postgres started.
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['tests/integration/**/*.test.ts', 'tests/stacks/**/*.test.ts'],
          // One embedded Postgres for the whole run; each integration file gets fresh databases cloned from a template.
          globalSetup: ['tests/helpers/global-setup.ts'],
        },
      },
    ],
  },
});
