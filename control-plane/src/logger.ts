import type { LoggerOptions } from 'pino';

/** Paths pino masks wherever they appear: credentials never reach a log line. */
export const REDACT_PATHS = [
  'password',
  '*.password',
  '*.*.password',
  'token',
  '*.token',
  'secret',
  '*.secret',
  'connectionString',
  '*.connectionString',
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
];

export function loggerOptions(level: string): LoggerOptions {
  return {
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { service: 'tenantry' },
  };
}
