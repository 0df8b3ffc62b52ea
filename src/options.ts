/**
 * Checks for option objects and numbers passed in from JavaScript, before any
 * system call or file access. Errors are {@link OptionTypeError} (a TypeError:
 * wrong kind, unknown option) and {@link OptionRangeError} (a RangeError:
 * out of range), each naming the option.
 *
 * The public functions of other modules check their whole options object
 * with one call, `checkEntryOptions('snapshot', options)`: the rules per
 * function live here, typed against each options interface, so an option
 * added to an interface without a rule does not compile.
 */
import { OptionRangeError, OptionTypeError } from './errors'
import { parseKinds, type SegmentFilter } from './filter'
import { KeyRanges, type KeyLike } from './keys'
import type { LockOptions } from './lock'
import type { RestoreOptions } from './restore'
import type { ShutdownOptions, StepOptions } from './shutdown'
import type { SnapshotOptions } from './snapshot'

/** `value` as a message shows it: strings quoted, objects by kind. */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'an array'
  if (typeof value === 'object') return `an object`
  if (typeof value === 'function') return 'a function'
  return String(value)
}

/** The option named in a `what` such as "shm.get: mode" or "mode". */
function optionOf(what: string): string {
  return what.slice(what.lastIndexOf(': ') + 1).trim()
}

/** TypeError for option names that are not in `allowed` (a typo must not be ignored silently). */
export function checkOptions(what: string, options: object | undefined, allowed: readonly string[]): void {
  if (options === undefined) return
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new OptionTypeError(`${what}: options must be an object, got ${show(options)}`, 'options')
  }
  for (const name of Object.keys(options)) {
    if (!allowed.includes(name)) throw new OptionTypeError(`${what}: unknown option "${name}" (known: ${allowed.join(', ')})`, name, 'ERR_INVALID_ARG_VALUE')
  }
}

/** A non-negative safe integer, else TypeError (wrong kind) / RangeError (out of range). */
export function checkCount(what: string, value: unknown, { min = 0, max = Number.MAX_SAFE_INTEGER } = {}): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new OptionTypeError(`${what} must be an integer, got ${show(value)}`, optionOf(what))
  if (value < min || value > max) throw new OptionRangeError(`${what} must be between ${min} and ${max}, got ${value}`, optionOf(what))
  return value
}

/** A user or group id; -1 (or undefined) means "not given". */
export function checkId(what: string, value: unknown): number {
  return value === undefined || value === -1 ? -1 : checkCount(what, value, { max: 0xfffffffe })
}

/** A permission mode 0..0o777; messages show modes in octal. */
export function checkMode(what: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw new OptionTypeError(`${what} must be an integer such as 0o600, got ${show(value)}`, optionOf(what))
  if (value < 0 || value > 0o777) {
    const got = value < 0 ? `-0o${(-value).toString(8)}` : `0o${value.toString(8)}`
    throw new OptionRangeError(`${what} must be between 0o000 and 0o777 (permission bits only), got ${got}`, optionOf(what))
  }
  return value
}

/** A boolean option, else TypeError. */
export function checkBool(what: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new OptionTypeError(`${what} must be true or false, got ${show(value)}`, optionOf(what))
  return value
}

/** `{ uid, gid }` (and `more` option names) of a call made as that identity: [uid, gid], -1 when not given. */
export function checkAs(what: string, options: { uid?: unknown; gid?: unknown }, more: readonly string[] = []): [number, number] {
  checkOptions(what, options, ['uid', 'gid', ...more])
  return [checkId('uid', options.uid), checkId('gid', options.gid)]
}

/** A number of seconds: finite, above 0 (`positive`) or at least 0. */
export function checkSeconds(what: string, value: unknown, { positive }: { positive: boolean }): number | undefined {
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new OptionTypeError(`${what} must be a number of seconds, got ${show(value)}`, optionOf(what))
  if (positive ? value <= 0 : value < 0) throw new OptionRangeError(`${what} must be ${positive ? 'above' : 'at least'} 0 seconds, got ${value}`, optionOf(what))
  return value
}

/** A check of one option's value (present, not undefined); `what` is "fn: name". */
export type Rule = (value: unknown, what: string) => void

/** The rules that options objects are made of. */
export const rules = {
  any: (() => {}) as Rule,
  path: ((v, what) => {
    if (typeof v !== 'string' || v === '') throw new OptionTypeError(`${what} must be a non-empty path, got ${show(v)}`, optionOf(what))
    if (v.includes('\0')) throw new OptionTypeError(`${what} must not contain a NUL byte`, optionOf(what), 'ERR_INVALID_ARG_VALUE')
  }) as Rule,
  string: ((v, what) => {
    if (typeof v !== 'string' || v === '') throw new OptionTypeError(`${what} must be a non-empty string, got ${show(v)}`, optionOf(what))
  }) as Rule,
  boolean: ((v, what) => void checkBool(what, v, false)) as Rule,
  count: ({ min = 0, max = Number.MAX_SAFE_INTEGER } = {}): Rule => (v, what) => void checkCount(what, v, { min, max }),
  seconds: ({ positive }: { positive: boolean }): Rule => (v, what) => void checkSeconds(what, v, { positive }),
  oneOf: (values: readonly string[]): Rule => (v, what) => {
    if (typeof v !== 'string' || !values.includes(v)) {
      throw new OptionTypeError(`${what} must be one of ${values.map((x) => `'${x}'`).join(', ')}, got ${show(v)}`, optionOf(what), 'ERR_INVALID_ARG_VALUE')
    }
  },
  function: ((v, what) => {
    if (typeof v !== 'function') throw new OptionTypeError(`${what} must be a function, got ${show(v)}`, optionOf(what))
  }) as Rule,
  signal: ((v, what) => {
    if (!(v instanceof AbortSignal)) throw new OptionTypeError(`${what} must be an AbortSignal, got ${show(v)}`, optionOf(what))
  }) as Rule,
  logger: ((v, what) => {
    if (typeof v !== 'object' || v === null || typeof (v as { log?: unknown }).log !== 'function') {
      throw new OptionTypeError(`${what} must be a Logger (an object with a log method, e.g. streamLogger()), got ${show(v)}`, optionOf(what))
    }
  }) as Rule,
  array: (each: Rule): Rule => (v, what) => {
    if (!Array.isArray(v)) throw new OptionTypeError(`${what} must be an array, got ${show(v)}`, optionOf(what))
    v.forEach((x, i) => each(x, `${what}[${i}]`))
  },
  /** A key, a key range string, or a list of them (numbers or strings). */
  keys: ((v, what) => {
    const list = Array.isArray(v) ? v : [v]
    for (const k of list) {
      if (typeof k !== 'number' && typeof k !== 'string') throw new OptionTypeError(`${what}: a key must be a number or a string such as "0x162e", got ${show(k)}`, optionOf(what))
    }
    try {
      new KeyRanges(list as KeyLike[])
    } catch (e) {
      const Err = e instanceof RangeError ? OptionRangeError : OptionTypeError
      throw new Err(`${what}: ${(e as Error).message}`, optionOf(what))
    }
  }) as Rule,
  filter: ((v, what) => checkWith(what, v, filterRules)) as Rule,
}

const filterRules = {
  kinds: ((v, what) => {
    if (typeof v !== 'string' && !(Array.isArray(v) && v.every((k) => typeof k === 'string'))) throw new OptionTypeError(`${what} must be a string such as "sem,msg" or a list of them, got ${show(v)}`, optionOf(what))
    try {
      parseKinds(v as string | string[])
    } catch (e) {
      throw new OptionTypeError(`${what}: ${(e as Error).message}`, optionOf(what), 'ERR_INVALID_ARG_VALUE')
    }
  }) as Rule,
  keys: rules.keys,
  excludeKeys: rules.keys,
  owners: rules.array((v, what) => {
    if (typeof v !== 'string' && typeof v !== 'number') throw new OptionTypeError(`${what} must be a uid or a user name, got ${show(v)}`, optionOf(what))
    if (typeof v === 'number') checkCount(what, v, { max: 0xfffffffe })
  }),
  minSize: rules.count(),
  maxSize: rules.count(),
} satisfies { [K in keyof Required<SegmentFilter>]: Rule }

/** Check an options object against its rules: unknown options, then each given value, then the required ones. */
export function checkWith(what: string, options: unknown, spec: Record<string, Rule>, required: readonly string[] = []): void {
  if (options === undefined && required.length === 0) return
  if (options === undefined || options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new OptionTypeError(`${what}: options must be an object${required.length ? ` with ${required.join(', ')}` : ''}, got ${show(options)}`, 'options')
  }
  checkOptions(what, options, Object.keys(spec))
  for (const [name, value] of Object.entries(options)) if (value !== undefined) spec[name]!(value, `${what}: ${name}`)
  for (const name of required) {
    if ((options as Record<string, unknown>)[name] === undefined) throw new OptionTypeError(`${what}: the ${name} option is required`, name)
  }
}

type Rules<T> = { [K in keyof Required<T>]: Rule }

/** The options of each public function that takes an options object. */
const entries = {
  snapshot: {
    spec: {
      stateDir: rules.path,
      filter: rules.filter,
      keep: rules.count(),
      force: rules.boolean,
      side: rules.boolean,
      strict: rules.boolean,
      reason: rules.oneOf(['manual', 'stop', 'exit', 'checkpoint', 'library']),
      clean: rules.boolean,
      chunkSize: rules.count({ min: 1 }),
      incremental: rules.boolean,
      concurrency: rules.count({ min: 1, max: 1024 }),
      lockTimeoutMs: rules.count(),
      freeze: rules.function,
      afterCopy: rules.function,
      signal: rules.signal,
      attachers: rules.array(rules.any),
      pinnedIds: ((v, what) => {
        if (!(v instanceof Set)) throw new OptionTypeError(`${what} must be a Set of segment ids, got ${show(v)}`, optionOf(what))
      }) as Rule,
      parent: ((v, what) => {
        if (v !== null) rules.string(v, what)
      }) as Rule,
      insecureStateDir: rules.boolean,
      log: rules.logger,
    } satisfies Rules<SnapshotOptions>,
    required: ['stateDir'],
  },
  restore: {
    spec: {
      stateDir: rules.path,
      warm: rules.oneOf(['keep', 'ignore']),
      onConflict: rules.oneOf(['fail', 'skip', 'replace']),
      partial: rules.boolean,
      generation: rules.string,
      filter: rules.filter,
      semFromCheckpoint: rules.oneOf(['restore', 'skip']),
      lockTimeoutMs: rules.count(),
      signal: rules.signal,
      insecureStateDir: rules.boolean,
      log: rules.logger,
    } satisfies Rules<RestoreOptions>,
    required: ['stateDir'],
  },
  prune: {
    spec: { keep: rules.count(), dryRun: rules.boolean, log: rules.logger } satisfies Rules<{ keep: number; dryRun?: boolean; log?: unknown }>,
    required: ['keep'],
  },
  diff: { spec: filterRules, required: [] },
  /** The options of verify and diff. */
  cancellable: { spec: { signal: rules.signal } satisfies Rules<{ signal?: AbortSignal }>, required: [] },
  verify: { spec: { signal: rules.signal, log: rules.logger } satisfies Rules<{ signal?: AbortSignal; log?: unknown }>, required: [] },
  list: { spec: filterRules, required: [] },
  lockFile: {
    spec: { exclusive: rules.boolean, timeoutMs: rules.count(), signal: rules.signal, readOnly: rules.boolean } satisfies Rules<LockOptions>,
    required: [],
  },
  createShutdown: {
    spec: {
      stateDir: rules.path,
      grace: rules.seconds({ positive: true }),
      keys: rules.keys,
      filter: rules.filter,
      snapshotReserve: rules.seconds({ positive: false }),
      keep: rules.count(),
      log: rules.logger,
      exit: rules.boolean,
      signals: rules.array(rules.string),
    } satisfies Rules<ShutdownOptions>,
    required: ['stateDir'],
  },
  step: { spec: { timeout: rules.seconds({ positive: true }) } satisfies Rules<StepOptions>, required: [] },
} as const

/**
 * Check the options object of a public function (its name in `entries`):
 * unknown options, types and ranges, required ones. `what` names it in
 * messages when it differs from the entry's name.
 */
export function checkEntryOptions(entry: keyof typeof entries, options: unknown, what: string = entry): void {
  const e = entries[entry]
  checkWith(what, options, e.spec, e.required)
}

/** A state dir argument given positionally (inspect, verify, diff…). */
export function checkStateDir(what: string, stateDir: unknown): void {
  rules.path(stateDir, `${what}: stateDir`)
}
