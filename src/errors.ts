/**
 * Errors the way Node reports system errors: `code` is the errno name, `errno`
 * is negative, `syscall` names the call, and the message says what we were
 * working on (a key, an id, a path) so that an operator's log is enough.
 */
import os from 'node:os'

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(os.constants.errno).map(([name, n]) => [n, name]),
)

export interface SystemError extends Error {
  code: string
  errno: number
  syscall: string
  path?: string
}

/** Name of a positive errno number, e.g. 13 → "EACCES". */
export function errnoName(errno: number): string {
  return errnoNames[Math.abs(errno)] ?? `E${Math.abs(errno)}`
}

/**
 * Rethrow what the addon threw (an Error with a positive `errno` and
 * `syscall`) as a Node-style error whose message names `subject`.
 * TypeErrors and RangeErrors from the addon pass through unchanged.
 */
export function systemError(e: unknown, subject: string): unknown {
  if (!(e instanceof Error)) return e
  const raw = e as Error & { errno?: number; syscall?: string }
  if (typeof raw.errno !== 'number' || typeof raw.syscall !== 'string' || raw.errno < 0) return e
  const code = errnoName(raw.errno)
  const reason = raw.message.replace(/^[^:]*: /, '').toLowerCase()
  const err = new Error(`${code}: ${reason}, ${raw.syscall} (${subject})`) as SystemError
  err.code = code
  err.errno = -raw.errno
  err.syscall = raw.syscall
  return err
}

/** Run a native call, turning its errno errors into Node-style ones about `subject`. */
export function sys<T>(subject: string, fn: () => T): T {
  try {
    return fn()
  } catch (e) {
    throw systemError(e, subject)
  }
}

/** The async form of {@link sys}. */
export async function sysAsync<T>(subject: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (e) {
    throw systemError(e, subject)
  }
}

/** True when `e` is a system error with one of these codes. */
export function hasCode(e: unknown, ...codes: string[]): boolean {
  return e instanceof Error && codes.includes((e as SystemError).code)
}
