/**
 * Exit codes scripts can rely on. Documented in README ("Exit codes").
 */
export const ExitCode = {
  ok: 0,
  /** Bad input, an API failure, a refused or failed operation. */
  error: 1,
  /** `status`: a component is unhealthy or a leader is stale. `trace`: findings. */
  unhealthy: 2,
  /** `upgrade`/`pivot`: something failed and was rolled back; the cluster is as before. */
  rolledBack: 3,
} as const

/**
 * An error meant for the user: one line saying what is wrong and what to do.
 * Commands print its message without a stack trace and exit with its code.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = ExitCode.error,
  ) {
    super(message)
    this.name = 'CliError'
  }
}
