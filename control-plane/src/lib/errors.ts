/** A message safe to store and show: never a stack, never a connection string. */
export function safeMessage(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg.replace(/postgres(ql)?:\/\/[^\s]+/g, 'postgres://[redacted]').slice(0, 500);
}
