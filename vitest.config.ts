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
          // tests/aws: the AWS SDK paths against an AWS API emulator (moto_server, one per file:
          // tests/aws/helpers/moto.ts), skipped with the reason where moto_server is missing. In this
          // project, not one of their own: a second project with this global setup in the same run
          // loads embedded.ts twice, whose module-level unhook then throws.
          include: ['tests/integration/**/*.test.ts', 'tests/stacks/**/*.test.ts', 'tests/aws/**/*.test.ts'],
          // One embedded Postgres for the whole run; each integration file gets fresh databases cloned from a template.
          globalSetup: ['tests/helpers/global-setup.ts'],
        },
      },
      {
        extends: true,
        test: {
          // The web console in Debian's Chromium (playwright-core), against a real control plane. Never
          // skipped in CI (.ci/run installs chromium); elsewhere skipped, with the reason, without it.
          name: 'browser',
          include: ['tests/browser/**/*.test.ts'],
          globalSetup: ['tests/helpers/global-setup.ts'],
        },
      },
    ],
  },
});
