import type { FastifyBaseLogger } from 'fastify';
import type { Bindings, ChildLoggerOptions } from 'pino';

type LevelName = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';
type Write = (...args: unknown[]) => void;
/** A logger that says whether a level is on (pino's loggers do). */
type Parent = FastifyBaseLogger & { isLevelEnabled(level: string): boolean };

/**
 * A request's logger, made when the request writes its first line. Fastify gives every request a
 * child logger carrying its request id, and pino runs a child's bindings through the redaction paths
 * (logger.ts) as it makes it: a cost each request paid although, below info (no access log), most
 * write nothing. Here a method asks first whether its level is on (the parent's level, read at that
 * moment); only then is the child made, once, with the same bindings, and the line written by it, so
 * the line is the one the child would have written.
 */
class RequestLogger {
  private made: FastifyBaseLogger | undefined;

  constructor(
    private readonly parent: Parent,
    private readonly bindings: Bindings,
  ) {}

  private get real(): FastifyBaseLogger {
    this.made ??= this.parent.child(this.bindings);
    return this.made;
  }

  private write(level: LevelName, args: unknown[]): void {
    if (this.made === undefined && !this.parent.isLevelEnabled(level)) return;
    (this.real[level] as Write)(...args);
  }

  get level(): string {
    return this.made?.level ?? this.parent.level;
  }

  set level(level: string) {
    this.real.level = level;
  }

  child(bindings: Bindings, options?: ChildLoggerOptions): FastifyBaseLogger {
    return this.real.child(bindings, options);
  }

  fatal(...args: unknown[]): void {
    this.write('fatal', args);
  }
  error(...args: unknown[]): void {
    this.write('error', args);
  }
  warn(...args: unknown[]): void {
    this.write('warn', args);
  }
  info(...args: unknown[]): void {
    this.write('info', args);
  }
  debug(...args: unknown[]): void {
    this.write('debug', args);
  }
  trace(...args: unknown[]): void {
    this.write('trace', args);
  }
  silent(): void {}
}

/**
 * Fastify's `childLoggerFactory`: a request's logger, made on its first line (RequestLogger). A route
 * with its own log level or serializers gets its child at once, as does a logger that cannot say
 * whether a level is on.
 */
export function requestLogger(
  logger: FastifyBaseLogger,
  bindings: Bindings,
  options: ChildLoggerOptions,
): FastifyBaseLogger {
  const parent = logger as Partial<Parent>;
  if (typeof parent.isLevelEnabled !== 'function') return logger.child(bindings, options);
  for (const _ in options) return logger.child(bindings, options);
  return new RequestLogger(logger as Parent, bindings) as unknown as FastifyBaseLogger;
}
