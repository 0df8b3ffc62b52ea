/** `shmkeep restore`: thin over restore() in src/restore.ts. */
import { humanSize } from '../log'
import { countObjects, parseSemFromCheckpoint, SEM_FROM_CHECKPOINT_HELP } from '../kinds'
import type { Logger } from '../log'
import { restore, RestoreError, type ConflictPolicy, type RestoreReport, type WarmPolicy } from '../restore'
import { shmRmidForced } from '../system'
import { lockTimeoutMs, COMMON_HELP, commonOptions, FILTER_HELP, filterFrom, filterOptions, makeLogger, ms, parse, printJson, requireStateDir, stateDirOption, UsageError } from './common'
import { EXIT, flagWords } from './errors'

const HELP = `Usage: shmkeep restore --state-dir DIR [options]

Recreate the segments saved in DIR's CURRENT generation in this IPC namespace
(unless it is warm — its lineage record is here, or a saved key is live, and
no restore was cut short: then nothing is restored and the exit code is 0):
same key, size, mode, owner and creator, and the same id where the kernel lets
shmkeep choose it. Every chunk is verified before a segment is handed over; if
CURRENT is damaged, the newest earlier generation that verifies is restored
instead. Run it before starting the app. An empty DIR is a normal first start;
a missing DIR is an error (mount a volume there: restore never creates it); a
read-only DIR is read only (nothing is written there: one warning says what
could not be recorded).

  -s, --state-dir DIR      where generations live; SHMKEEP_STATE_DIR
  --insecure-state-dir     trust a state dir that other users may write or own
                           (refused by default: they could forge what is restored)
  --warm keep|ignore       in a warm namespace: keep its live state and restore
                           nothing (default), or restore anyway, --on-conflict
                           deciding about each key (ignore + replace rolls a
                           warm namespace back)
  --on-conflict POLICY     a key that exists here already, when restoring: fail
                           (default), skip (keep the live one), replace (when
                           unattached)
  --partial                restore the good segments of the generation and
                           report the bad ones, instead of all or nothing
  --generation NAME        restore this generation (no fallback)
  --lock-timeout SEC       give up waiting for the state dir's lock after SEC seconds
SEMCKPT

FILTERS
COMMON

Exit codes: 0 restored (or nothing to restore, or warm and kept); 1 failed
(the namespace is as it was; also a missing or untrusted state dir); 2 usage;
3 --partial left some segments out.`

const options = {
  ...commonOptions,
  ...stateDirOption,
  ...filterOptions,
  'on-conflict': { type: 'string' },
  warm: { type: 'string' },
  partial: { type: 'boolean' },
  generation: { type: 'string' },
  'lock-timeout': { type: 'string' },
  'sem-from-checkpoint': { type: 'string' },
} as const

function cliLogger(log: Logger): Logger {
  return {
    log: (level, event, message, fields) => log.log(level, event, message + (event === 'restore.warm' ? ' (--warm ignore restores anyway)' : ''), fields),
    progress: log.progress?.bind(log),
  }
}

function summary(r: RestoreReport): string {
  if (r.generation === null) return 'nothing to restore (empty state dir): a first start'
  const done = r.segments.filter((s) => s.status === 'restored')
  const skipped = r.segments.filter((s) => s.status === 'skipped')
  return (
    `restored ${done.length} segment(s)${countObjects(r.objects, 'restored') ? `, ${countObjects(r.objects, 'restored')}` : ''} from ${r.generation}, ${humanSize(r.bytes)} in ${ms(r.durationMs)}` +
    (skipped.length ? `; kept ${skipped.length} live one(s): ${skipped.map((s) => s.key).join(', ')}` : '')
  )
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('SEMCKPT', SEM_FROM_CHECKPOINT_HELP).replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const onConflict = values['on-conflict'] as ConflictPolicy | undefined
  if (onConflict !== undefined && !['fail', 'skip', 'replace'].includes(onConflict)) throw new UsageError(`--on-conflict must be fail, skip or replace, not ${onConflict}`)
  const warm = values.warm as WarmPolicy | undefined
  if (warm !== undefined && !['keep', 'ignore'].includes(warm)) throw new UsageError(`--warm must be keep or ignore, not ${warm}`)
  const lockTimeout = lockTimeoutMs(values)
  let semFromCheckpoint
  try {
    semFromCheckpoint = parseSemFromCheckpoint(values['sem-from-checkpoint'])
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  const filter = filterFrom(values)
  const log = cliLogger(makeLogger(values))
  // TERM or INT while restoring: undo what was created and exit 1, not die
  // halfway (the next restore would have to clean up after us).
  const abort = new AbortController()
  const onSignal = (sig: NodeJS.Signals) => abort.abort(sig)
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, onSignal)
  try {
    const report = await restore({
      signal: abort.signal,
      stateDir: requireStateDir(values),
      warm,
      onConflict,
      semFromCheckpoint,
      filter,
      partial: values.partial,
      generation: values.generation,
      lockTimeoutMs: lockTimeout,
      log,
    })
    if (values.json) printJson('shmkeep.restore', report)
    // Warm: the library's restore.warm line said why nothing was restored.
    if (!report.warm) log.log('info', 'restore', summary(report), { generation: report.generation, bytes: report.bytes, ms: Math.round(report.durationMs) })
    for (const s of report.segments) {
      if (s.status === 'not-restored' || s.status === 'failed') log.log('error', 'restore.segment', `segment ${s.key} (saved id ${s.savedId}) not restored: ${s.reason}`)
    }
    if (report.generation && shmRmidForced()) {
      log.log('warn', 'restore.rmid-forced', 'kernel.shm_rmid_forced is 1 here: a segment nobody attaches is destroyed; `shmkeep restore` cannot keep them alive until the app attaches — use `shmkeep run`, which pins them')
    }
    return report.segments.some((s) => s.status === 'failed' || s.status === 'not-restored') ? EXIT.partial : EXIT.ok
  } catch (e) {
    if (!(e instanceof RestoreError)) throw e
    const message = flagWords(e.message)
    if (values.json) printJson('shmkeep.restore', { ...e.report, error: message })
    log.log('error', 'restore.failed', message)
    return EXIT.failed
  } finally {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.removeListener(sig, onSignal)
  }
}
