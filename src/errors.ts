/**
 * Errors the way Node reports system errors: `code` is the errno name, `errno`
 * is negative, `syscall` names the call, and the message says what we were
 * working on (a key, an id, a path) so that an operator's log is enough.
 */
import os from 'node:os'

const errnoNames: Record<number, string> = Object.fromEntries(
  Object.entries(os.constants.errno).map(([name, n]) => [n, name]),
)

/**
 * A failed system call: `code` is the errno name ("ENOENT"), `errno` its
 * negative number, `syscall` the call. One class for the whole package, so
 * `instanceof SystemError` works from CommonJS and ES modules alike.
 */
export class SystemError extends Error {
  code: string
  errno: number
  syscall: string
  path?: string
  constructor(message: string, fields: { code: string; errno: number; syscall: string; path?: string }) {
    super(message)
    this.code = fields.code
    this.errno = fields.errno
    this.syscall = fields.syscall
    if (fields.path !== undefined) this.path = fields.path
  }
}
SystemError.prototype.name = 'SystemError'

/**
 * A Buffer used after `shm.detach` / `mmap.unmap` (code
 * ERR_SHMKEEP_DETACHED): "mmap.sync: the Buffer is already unmapped (/path)".
 */
export class DetachedError extends Error {
  readonly code = 'ERR_SHMKEEP_DETACHED'
  constructor(what: string, subject: string, state: 'detached' | 'unmapped' = 'detached') {
    super(`${what}: the Buffer is already ${state} (${subject})`)
  }
}
DetachedError.prototype.name = 'DetachedError'

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
  // "No such file or directory, open '/Path'" → "no such file …": only the
  // first letter, never a path or a name in the message.
  const rest = raw.message.replace(/^[^:]*: /, '')
  const reason = rest.charAt(0).toLowerCase() + rest.slice(1)
  return new SystemError(`${code}: ${reason}, ${raw.syscall} (${subject})`, { code, errno: -raw.errno, syscall: raw.syscall })
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

/**
 * A bad argument or option of the wrong kind, or unknown: a TypeError whose
 * `option` names it and whose `code` is Node's (ERR_INVALID_ARG_TYPE, or
 * ERR_INVALID_ARG_VALUE for an unknown option or value).
 */
export class OptionTypeError extends TypeError {
  constructor(
    message: string,
    readonly option: string,
    readonly code: 'ERR_INVALID_ARG_TYPE' | 'ERR_INVALID_ARG_VALUE' = 'ERR_INVALID_ARG_TYPE',
  ) {
    super(message)
  }
}
OptionTypeError.prototype.name = 'TypeError'

/** A number out of range: a RangeError whose `option` names it (code ERR_OUT_OF_RANGE). */
export class OptionRangeError extends RangeError {
  readonly code = 'ERR_OUT_OF_RANGE'
  constructor(
    message: string,
    readonly option: string,
  ) {
    super(message)
  }
}
OptionRangeError.prototype.name = 'RangeError'
