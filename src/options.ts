/** Checks for option objects and numbers passed in from JavaScript, before any system call. */

/** TypeError for option names that are not in `allowed` (a typo must not be ignored silently). */
export function checkOptions(what: string, options: object | undefined, allowed: readonly string[]): void {
  if (options === undefined) return
  if (options === null || typeof options !== 'object') throw new TypeError(`${what}: options must be an object`)
  for (const name of Object.keys(options)) {
    if (!allowed.includes(name)) throw new TypeError(`${what}: unknown option "${name}" (known: ${allowed.join(', ')})`)
  }
}

/** A non-negative safe integer, else TypeError (wrong kind) / RangeError (out of range). */
export function checkCount(what: string, value: unknown, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new TypeError(`${what} must be an integer, got ${String(value)}`)
  if (value < min || value > max) throw new RangeError(`${what} must be between ${min} and ${max}, got ${value}`)
  return value
}

/** A user or group id; -1 (or undefined) means "not given". */
export function checkId(what: string, value: unknown): number {
  return value === undefined || value === -1 ? -1 : checkCount(what, value, { max: 0xfffffffe })
}

/** A permission mode 0..0o777. */
export function checkMode(what: string, value: unknown): number {
  return checkCount(what, value, { max: 0o777 })
}

/** A boolean option, else TypeError. */
export function checkBool(what: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new TypeError(`${what} must be true or false, got ${String(value)}`)
  return value
}

/** `{ uid, gid }` (and `more` option names) of a call made as that identity: [uid, gid], -1 when not given. */
export function checkAs(what: string, options: { uid?: unknown; gid?: unknown }, more: readonly string[] = []): [number, number] {
  checkOptions(what, options, ['uid', 'gid', ...more])
  return [checkId('uid', options.uid), checkId('gid', options.gid)]
}
