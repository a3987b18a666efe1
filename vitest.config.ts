import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    // `npm test` runs every project; `npm run test:unit` runs pure code only, with no Postgres started.
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
      {
        extends: true,
        test: {
          // The AWS SDK paths against an AWS API emulator (moto_server, one per file: tests/aws/helpers/moto.ts),
          // with real Postgres where a test runs the control plane. Skipped, with the reason, without moto_server.
          name: 'aws',
          include: ['tests/aws/**/*.test.ts'],
          globalSetup: ['tests/helpers/global-setup.ts'],
        },
      },
    ],
  },
});
