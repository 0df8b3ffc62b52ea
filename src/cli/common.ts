/**
 * What every subcommand shares: option parsing (node:util parseArgs, with
 * environment variables as defaults), the logger, the filters, JSON output.
 */
import fs from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { parseSize, segmentPredicate, type SegmentFilter } from '../filter'
import { describeFsError, streamLogger, type Logger } from '../log'
import { progressLogger } from '../progress'
import { jsonReport } from '../run/report'
import { INSECURE_ENV } from '../state/trust'
import { flagWords, UsageError } from './errors'

export { UsageError }

type Options = NonNullable<ParseArgsConfig['options']>

/** Options every command takes. */
export const commonOptions = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  verbose: { type: 'boolean', short: 'v' },
  'log-format': { type: 'string' },
} as const satisfies Options

/** `--key` and friends, for the commands that pick segments. */
export const filterOptions = {
  kind: { type: 'string', multiple: true },
  key: { type: 'string', multiple: true },
  'exclude-key': { type: 'string', multiple: true },
  owner: { type: 'string', multiple: true },
  'min-size': { type: 'string' },
  'max-size': { type: 'string' },
} as const satisfies Options

export const stateDirOption = {
  'state-dir': { type: 'string', short: 's' },
  'insecure-state-dir': { type: 'boolean' },
} as const satisfies Options

/**
 * Parse argv; each option's environment variable (SHMKEEP_<NAME>, e.g.
 * SHMKEEP_STATE_DIR) is its default. Unknown options are usage errors.
 */
export type Values<O extends Options> = {
  [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : O[K] extends { multiple: true } ? string[] : string
}

export function parse<O extends Options>(argv: string[], options: O, { positionals = false } = {}): { values: Values<O>; positionals: string[] } {
  try {
    const { values, positionals: rest } = parseArgs({ args: argv, options, allowPositionals: positionals, strict: true })
    const v = values as Record<string, unknown>
    for (const [name, spec] of Object.entries(options)) {
      if (v[name] !== undefined) continue
      const env = process.env[`SHMKEEP_${name.toUpperCase().replace(/-/g, '_')}`]
      if (env === undefined || env === '') continue
      if (spec.type === 'boolean') v[name] = !['0', 'false', 'no', 'off'].includes(env.toLowerCase())
      // Several values (a list option, or hook commands that contain ';'): one per line.
      else v[name] = spec.multiple ? env.split('\n').map((x) => x.trim()).filter(Boolean) : env
    }
    return { values: v as Values<O>, positionals: rest }
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
}

/**
 * The logger the flags ask for. It shows the progress of long work
 * (src/progress.ts): a line redrawn in place when stderr is a terminal and
 * the format is text (unless `terminal: false`: `run`, whose app shares the
 * terminal), else a log line every few seconds; none with --quiet.
 */
export function makeLogger(values: { quiet?: boolean; verbose?: boolean; 'log-format'?: string }, { terminal = true } = {}): Logger {
  const format = values['log-format'] ?? 'text'
  if (format !== 'text' && format !== 'json') throw new UsageError(`--log-format must be text or json, not ${format}`)
  const level = values.quiet ? 'warn' : values.verbose ? 'debug' : 'info'
  if (level === 'warn') return inFlagWords(streamLogger({ format, level }))
  const stderr = process.stderr
  const drawn = terminal && format === 'text' && stderr.isTTY
  return inFlagWords(
    progressLogger((write) => streamLogger({ format, level, write }), {
      write: (line) => stderr.write(line),
      terminal: drawn ? { write: (text) => stderr.write(text), get columns() { return stderr.columns } } : undefined,
    }),
  )
}

/** A logger whose messages speak of this command's flags (see {@link flagWords}); progress passes through. */
export function inFlagWords(log: Logger): Logger {
  return { log: (level, event, message, fields) => log.log(level, event, flagWords(message), fields), progress: log.progress?.bind(log) }
}

/** `--lock-timeout SEC` in milliseconds (undefined: wait as long as it takes). */
export function lockTimeoutMs(values: { 'lock-timeout'?: string }): number | undefined {
  const text = values['lock-timeout']
  if (text === undefined) return undefined
  const ms = Number(text) * 1000
  if (!(ms >= 0)) throw new UsageError('--lock-timeout must be a number of seconds')
  return ms
}

export function requireStateDir(values: { 'state-dir'?: string; 'insecure-state-dir'?: boolean }): string {
  const dir = values['state-dir']
  if (!dir) throw new UsageError('--state-dir (or SHMKEEP_STATE_DIR) is required')
  // --insecure-state-dir reaches every state dir the command opens through
  // the variable that is its library default (src/state/trust.ts).
  if (values['insecure-state-dir']) process.env[INSECURE_ENV] = '1'
  return dir
}

export function filterFrom(values: { kind?: string[]; key?: string[]; 'exclude-key'?: string[]; owner?: string[]; 'min-size'?: string; 'max-size'?: string }): SegmentFilter {
  try {
    const filter = {
      kinds: values.kind,
      keys: values.key,
      excludeKeys: values['exclude-key'],
      owners: values.owner?.flatMap((o) => o.split(',')),
      minSize: values['min-size'] === undefined ? undefined : parseSize(values['min-size']),
      maxSize: values['max-size'] === undefined ? undefined : parseSize(values['max-size']),
    }
    segmentPredicate(filter) // a bad key list or an unknown owner is a usage error, found now
    return filter
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
}

/** Print a report as JSON with its schema name and version. */
export function printJson(schema: string, body: object): void {
  process.stdout.write(jsonReport(schema, body))
}

export function ms(n: number): string {
  return `${Math.round(n)} ms`
}

export const FILTER_HELP = `Objects (default: every kind; posix-shm only when shmkeep is PID 1 of its container):
  --kind LIST           only these kinds, or all: shm (SysV segments), sem (semaphore
                        sets), msg (SysV message queues), posix-shm (the files of
                        /dev/shm: shm_open objects, named semaphores), mqueue (POSIX
                        message queues: taken only at run's final snapshot, or when
                        named here, as reading them empties and refills them)
  --key LIST            only these keys: 0x162e,0x1000-0x1fff (repeatable; SysV kinds:
                        POSIX objects have names and are not filtered by key)
  --exclude-key LIST    not these keys
  --owner USER          only objects owned by this uid or user name (repeatable)
  --min-size SIZE       only segments of at least SIZE bytes (4096, 64k, 1M, 2G)
  --max-size SIZE       only segments of at most SIZE bytes (sizes pick segments only)`

const JSON_HELP = '  --json                machine-readable report on stdout (schema in docs/OPERATIONS.md)\n'

export const COMMON_HELP = `Output:
${JSON_HELP}  -q, --quiet           only warnings and errors on stderr
  -v, --verbose         more detail on stderr
  --log-format FORMAT   text (default) or json lines
  -h, --help            this help
  -V, --version         print shmkeep's version
Every option can also come from the environment as SHMKEEP_<OPTION> (--state-dir
as SHMKEEP_STATE_DIR, --min-size as SHMKEEP_MIN_SIZE; repeatable ones: one value per line).`

/** COMMON_HELP without --json, for `run` (its stdout is the app's: --report-file instead). */
export const COMMON_HELP_NO_JSON = COMMON_HELP.replace(JSON_HELP, '')

/** The state dir option as the commands that read one list it. */
export const STATE_DIR_HELP = `  -s, --state-dir DIR   where generations live (a volume); SHMKEEP_STATE_DIR
  --insecure-state-dir  trust a state dir that other users may write or own`

/**
 * The state dir of a command that only reads it: a missing one is a one-line
 * error naming it, not a stack of fs calls.
 */
export function existingStateDir(values: { 'state-dir'?: string }): string {
  const dir = requireStateDir(values)
  let st: fs.Stats
  try {
    st = fs.statSync(dir)
  } catch (e) {
    throw new Error(`state dir ${dir}: ${describeFsError(e)}`)
  }
  if (!st.isDirectory()) throw new Error(`state dir ${dir} is not a directory`)
  return dir
}
