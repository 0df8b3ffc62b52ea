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

/**
 * The library speaks of its options (`onConflict: 'skip'`), since that is what
 * a Node developer can change; a command's user can change its flags. One
 * table for every command's log lines and error messages.
 */
export function flagWords(text: string): string {
  return text
    .replace(/onConflict: '([\w-]+)'/g, '--on-conflict=$1')
    .replace(/warm: '([\w-]+)'/g, '--warm $1')
    .replace(/semFromCheckpoint: '([\w-]+)'/g, '--sem-from-checkpoint=$1')
    .replace(/insecureStateDir: true/g, '--insecure-state-dir')
    .replace(/filter\.kinds: '([\w,-]+)'/g, '--kind $1')
}
