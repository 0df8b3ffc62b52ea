/** `shmkeep snapshot`: thin over snapshot() in src/snapshot.ts. */
import { humanSize } from '../log'
import { snapshot, SnapshotError, type SnapshotReport } from '../snapshot'
import { lockTimeoutMs, COMMON_HELP, FILTER_HELP, commonOptions, filterFrom, filterOptions, makeLogger, ms, parse, printJson, requireStateDir, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'
import { EXIT_TABLE_HELP, SNAPSHOT_EXIT } from '../outcome'

const HELP = `Usage: shmkeep snapshot --state-dir DIR [options]

Save every SysV shared memory segment of this IPC namespace into a new
generation of DIR (fsynced, then made CURRENT). Run it after the app stopped:
a segment that a process still has attached is saved as it is in memory
while it is copied — every chunk verifies, but the image may be torn across
chunks, and the generation is marked "live" (else "stopped").
A segment removed meanwhile is left out (logged); one that cannot be read is
recorded as NOT saved, with what would make it readable, and the others are
saved (exit 4) — unless --strict.

  -s, --state-dir DIR   where generations live (a volume); SHMKEEP_STATE_DIR
  --keep N              generations to keep (default 2)
  --force               switch CURRENT even if another writer moved it
  --strict              all or nothing: a segment that cannot be read fails the snapshot (exit 1)
  --lock-timeout SEC    give up waiting for the state dir's lock after SEC seconds

FILTERS
COMMON

EXITS`

const options = {
  ...commonOptions,
  ...stateDirOption,
  ...filterOptions,
  keep: { type: 'string' },
  force: { type: 'boolean' },
  strict: { type: 'boolean' },
  'lock-timeout': { type: 'string' },
} as const

function summary(r: SnapshotReport): string {
  const saved = r.segments.filter((s) => s.status === 'saved')
  const where = r.current ? 'now CURRENT' : 'written beside CURRENT'
  const unsaved = r.unsaved.length ? `; ${r.unsaved.length} object(s) NOT saved: ${r.unsaved.map((u) => (u.kind === 'shm' ? u.key : `${u.kind} ${u.key}`)).join(', ')}` : ''
  return `snapshot ${r.generation}: ${saved.length} segment(s), ${humanSize(r.bytes)} (${humanSize(r.bytesWritten)} written) in ${ms(r.durationMs)}, ${r.consistency}, ${where}${unsaved}`
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP).replace('EXITS', EXIT_TABLE_HELP) + '\n')
    return EXIT.ok
  }
  const keep = values.keep === undefined ? 2 : Number(values.keep)
  if (!Number.isInteger(keep) || keep < 0) throw new UsageError(`--keep must be a whole number, not ${values.keep}`)
  const lockTimeout = lockTimeoutMs(values)
  const log = makeLogger(values)
  try {
    const report = await snapshot({
      stateDir: requireStateDir(values),
      filter: filterFrom(values),
      keep,
      force: values.force,
      strict: values.strict,
      lockTimeoutMs: lockTimeout,
      log,
    })
    if (values.json) printJson('shmkeep.snapshot', report)
    log.log(report.outcome === 'saved' ? 'info' : 'warn', 'snapshot', summary(report), { generation: report.generation, outcome: report.outcome, bytes: report.bytes, ms: Math.round(report.durationMs) })
    return SNAPSHOT_EXIT[report.outcome]
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e
    if (values.json) printJson('shmkeep.snapshot', { ...e.report, error: e.message })
    log.log('error', 'snapshot.failed', e.message)
    return SNAPSHOT_EXIT[e.report.outcome]
  }
}
