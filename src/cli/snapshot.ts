/** `shmkeep snapshot`: thin over snapshot() in src/snapshot.ts. */
import { humanSize } from '../filter'
import { snapshot, SnapshotError, type SnapshotReport } from '../snapshot'
import { lockTimeoutMs, COMMON_HELP, FILTER_HELP, commonOptions, filterFrom, filterOptions, makeLogger, ms, parse, printJson, requireStateDir, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep snapshot --state-dir DIR [options]

Save every SysV shared memory segment of this IPC namespace into a new
generation of DIR (fsynced, then made CURRENT). Run it after the app stopped.

  -s, --state-dir DIR   where generations live (a volume); SHMKEEP_STATE_DIR
  --keep N              generations to keep (default 2)
  --force               switch CURRENT even if another writer moved it
  --lock-timeout SEC    give up waiting for the state dir's lock after SEC seconds

FILTERS
COMMON

Exit codes: 0 saved; 1 failed (nothing written, CURRENT unchanged);
2 usage; 3 written beside CURRENT without switching it (see the log).`

const options = {
  ...commonOptions,
  ...stateDirOption,
  ...filterOptions,
  keep: { type: 'string' },
  force: { type: 'boolean' },
  'lock-timeout': { type: 'string' },
} as const

function summary(r: SnapshotReport): string {
  const saved = r.segments.filter((s) => s.status === 'saved')
  const where = r.current ? 'now CURRENT' : 'written beside CURRENT'
  return `snapshot ${r.generation}: ${saved.length} segment(s), ${humanSize(r.bytes)} (${humanSize(r.bytesWritten)} written) in ${ms(r.durationMs)}, ${where}`
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP) + '\n')
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
      lockTimeoutMs: lockTimeout,
      log,
    })
    if (values.json) printJson('shmkeep.snapshot', report)
    log.log('info', 'snapshot', summary(report), { generation: report.generation, bytes: report.bytes, ms: Math.round(report.durationMs) })
    return report.current ? EXIT.ok : EXIT.partial
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e
    if (values.json) printJson('shmkeep.snapshot', { ...e.report, error: e.message })
    log.log('error', 'snapshot.failed', e.message)
    return EXIT.failed
  }
}
