/**
 * A failure the CLI finds itself rather than one the API answers (an operation that failed under
 * `--wait`, a confirmation not typed, a drift run that failed): it has a stable code as the API's
 * errors do, so a script reads both the same way (`error CODE: message`; `{"error": {code, message}}`
 * with `-o json`).
 */
export class CliFailure extends Error {
  override readonly name: string = 'CliFailure';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
