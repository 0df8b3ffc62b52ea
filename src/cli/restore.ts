/** `shmkeep restore`: thin over restore() in src/restore.ts. */
import { humanSize } from '../log'
import { countObjects, parseSemFromCheckpoint, SEM_FROM_CHECKPOINT_HELP } from '../kinds'
import { restore, RestoreError, type ConflictPolicy, type RestoreReport } from '../restore'
import { shmRmidForced } from '../system'
import { lockTimeoutMs, COMMON_HELP, commonOptions, makeLogger, ms, parse, printJson, requireStateDir, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep restore --state-dir DIR [options]

Recreate the segments saved in DIR's CURRENT generation in this IPC namespace
(unless it is warm — its lineage record is here, or a saved key is live, and
no restore was cut short: then nothing is restored and the exit code is 0):
same key, size, mode, owner and creator, and the same id where the kernel lets
shmkeep choose it. Every chunk is verified before a segment is handed over; if
CURRENT is damaged, the newest earlier generation that verifies is restored
instead. Run it before starting the app. An empty DIR is a normal first start;
a missing DIR is an error (mount a volume there: restore never creates it).

  -s, --state-dir DIR      where generations live; SHMKEEP_STATE_DIR
  --insecure-state-dir     trust a state dir that other users may write or own
                           (refused by default: they could forge what is restored)
  --on-conflict POLICY     restore even into a warm namespace; a key that exists
                           here already: fail,
                           skip (keep the live one), replace (when unattached)
  --partial                restore the good segments of the generation and
                           report the bad ones, instead of all or nothing
  --generation NAME        restore this generation (no fallback)
  --lock-timeout SEC       give up waiting for the state dir's lock after SEC seconds
SEMCKPT
COMMON

Exit codes: 0 restored (or nothing to restore); 1 failed (the namespace is as
it was); 2 usage; 3 --partial left some segments out.`

const options = {
  ...commonOptions,
  ...stateDirOption,
  'on-conflict': { type: 'string' },
  partial: { type: 'boolean' },
  generation: { type: 'string' },
  'lock-timeout': { type: 'string' },
  'sem-from-checkpoint': { type: 'string' },
} as const

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
    process.stdout.write(HELP.replace('SEMCKPT', SEM_FROM_CHECKPOINT_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const onConflict = values['on-conflict'] as ConflictPolicy | undefined
  if (onConflict !== undefined && !['fail', 'skip', 'replace'].includes(onConflict)) throw new UsageError(`--on-conflict must be fail, skip or replace, not ${onConflict}`)
  const lockTimeout = lockTimeoutMs(values)
  let semFromCheckpoint
  try {
    semFromCheckpoint = parseSemFromCheckpoint(values['sem-from-checkpoint'])
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  const log = makeLogger(values)
  // TERM or INT while restoring: undo what was created and exit 1, not die
  // halfway (the next restore would have to clean up after us).
  const abort = new AbortController()
  const onSignal = (sig: NodeJS.Signals) => abort.abort(sig)
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, onSignal)
  try {
    const report = await restore({
      signal: abort.signal,
      stateDir: requireStateDir(values),
      onConflict,
      semFromCheckpoint,
      partial: values.partial,
      generation: values.generation,
      lockTimeoutMs: lockTimeout,
      log,
    })
    if (values.json) printJson('shmkeep.restore', report)
    log.log('info', 'restore', summary(report), { generation: report.generation, bytes: report.bytes, ms: Math.round(report.durationMs) })
    for (const s of report.segments) {
      if (s.status === 'not-restored' || s.status === 'failed') log.log('error', 'restore.segment', `segment ${s.key} (saved id ${s.savedId}) not restored: ${s.reason}`)
    }
    if (report.generation && shmRmidForced()) {
      log.log('warn', 'restore.rmid-forced', 'kernel.shm_rmid_forced is 1 here: a segment nobody attaches is destroyed; `shmkeep restore` cannot keep them alive until the app attaches — use `shmkeep run`, which pins them')
    }
    return report.segments.some((s) => s.status === 'failed' || s.status === 'not-restored') ? EXIT.partial : EXIT.ok
  } catch (e) {
    if (!(e instanceof RestoreError)) throw e
    if (values.json) printJson('shmkeep.restore', { ...e.report, error: e.message })
    log.log('error', 'restore.failed', e.message)
    return EXIT.failed
  } finally {
    for (const sig of ['SIGTERM', 'SIGINT'] as const) process.removeListener(sig, onSignal)
  }
}
