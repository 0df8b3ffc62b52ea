/** Exit codes of every command, and the usage error. */

export const EXIT = {
  ok: 0,
  /** The operation failed: no generation written, nothing restored, a chunk bad. */
  failed: 1,
  /** Bad command line or environment. */
  usage: 2,
  /** Done, but not all of it: a side generation (CURRENT not switched), a partial restore. */
  partial: 3,
} as const

/** A mistake on the command line: exit code 2 with the command's help hint. */
export class UsageError extends Error {}
