/** `shmkeep run -- COMMAND`: thin over runApp() in src/run/supervisor.ts. */
import { parseSemFromCheckpoint } from '../kinds'
import { parseDuration } from '../run/deadline'
import { parseRewrites } from '../run/signals'
import { EXIT_TABLE_HELP } from '../outcome'
import { checkReportPath, emptyRunReport, writeRunReport } from '../run/report'
import { RUN_EXIT, runApp, type RunOptions } from '../run/supervisor'
import { COMMON_HELP_NO_JSON, FILTER_HELP, commonOptions, filterFrom, filterOptions, makeLogger, parse, requireStateDir, stateDirOption, UsageError } from './common'

const HELP = `Usage: shmkeep run [options] -- COMMAND [ARGS...]

The container's entrypoint: restore the saved segments, start COMMAND (no
shell; its own process group), forward signals to it, and when the container
stops (TERM or INT) let it finish, snapshot every segment, and exit with its
status. Runs as PID 1 or under tini / docker run --init.

  -s, --state-dir DIR           where generations live (a volume); SHMKEEP_STATE_DIR.
                                Never created: a missing one fails (exit 125)
  --insecure-state-dir          trust a state dir that other users may write or own
                                (refused by default: they could forge what is restored)
  --grace SEC                   the orchestrator's grace period (docker stop -t;
                                Kubernetes terminationGracePeriodSeconds); default 10
  --stop-timeout SEC            how long the app gets to stop before SIGKILL. Default:
                                  grace − snapshot reserve − hooks
                                where the reserve is max(2 s, 2 × the final snapshot
                                time: the median of the last 3, else estimated from
                                the bytes to save and this restore's throughput), and
                                at least twice what a final snapshot cut off by SIGKILL
                                had; hooks = (pre-stop + post-stop hooks) × --hook-timeout.
                                E.g. --grace 10, one --pre-stop and one --post-stop:
                                10 − 2 − 2 × 5 = −2 s. Under 1 s run refuses to start
                                (exit 2, the arithmetic in the log); under half the grace
                                it warns. The log's "deadline" line shows the numbers
  --signal-group                send signals to the app's whole process group (as PID 1,
                                every process of the container gets the stop's TERM and
                                is waited for anyway)
  --rewrite FROM:TO             forward signal FROM as TO, e.g. TERM:QUIT (repeatable)
  --on-restore-error exit|start exit without starting the app (default), or start it
  --accept-new-state            with start: its snapshots may replace CURRENT
  --force                       let snapshots replace CURRENT although their lineage
                                is unknown (this namespace was not restored by shmkeep
                                from this state dir) or another writer moved CURRENT
  --snapshot-on-exit always|success|never
                                when the app exits on its own (default always)
  --keep N                      generations to keep (default 2)
  --checkpoint-interval SEC     also snapshot every SEC seconds while the app runs
                                (bounds what a SIGKILL or a lost node can lose)
  --freeze sigstop|cgroup|none  how a checkpoint gets an image of one instant:
                                SIGSTOP the app's processes (default), freeze its
                                cgroup v2, or not at all (the image may tear)
  --freeze-timeout SEC          how long the processes may take to stop (default 2)
  --sem-from-checkpoint skip|restore
                                semaphore sets that a checkpoint saved while the app ran
                                (a lock held then would come back held by nobody, and the
                                app would hang on it): skip (default: the app creates
                                them afresh) or restore; sets saved at a stop always return
  --post-start CMD              shell command run once the app has started (e.g. register)
  --pre-stop CMD                run on TERM before it is forwarded (deregister, mark DOWN,
                                sleep to drain)
  --post-stop CMD               run after the final snapshot
                                (each repeatable, run in order; from the environment:
                                one command per line)
  --hook-timeout SEC            how long each hook may run (default 5); hooks count
                                against --grace in the stop timeout
  --report-file PATH            when run ends, write its report there as JSON (schema
                                shmkeep.run: the restore, the app's end, the final
                                snapshot, the exit status), replaced atomically. There
                                is no --json: run's stdout belongs to the app
FILTERS
COMMON

Exit status: the app's (its code, or 128 + the signal that killed it) when
its state was kept; 126 / 127 COMMAND cannot be run / was not found; else:
EXITS

Dockerfile:
  VOLUME /var/lib/shmkeep
  ENTRYPOINT ["shmkeep", "run", "--state-dir", "/var/lib/shmkeep", "--grace", "10", "--", "/app/server"]
  # docker stop -t 10 gives the app the rest of those 10 s, then the snapshot runs`

const options = {
  ...commonOptions,
  ...stateDirOption,
  ...filterOptions,
  grace: { type: 'string' },
  'stop-timeout': { type: 'string' },
  'signal-group': { type: 'boolean' },
  rewrite: { type: 'string', multiple: true },
  'on-restore-error': { type: 'string' },
  'accept-new-state': { type: 'boolean' },
  force: { type: 'boolean' },
  'snapshot-on-exit': { type: 'string' },
  keep: { type: 'string' },
  'checkpoint-interval': { type: 'string' },
  freeze: { type: 'string' },
  'freeze-timeout': { type: 'string' },
  'sem-from-checkpoint': { type: 'string' },
  'post-start': { type: 'string', multiple: true },
  'pre-stop': { type: 'string', multiple: true },
  'post-stop': { type: 'string', multiple: true },
  'hook-timeout': { type: 'string' },
  'report-file': { type: 'string' },
} as const

function seconds(name: string, value: string | undefined, fallback?: number): number | undefined {
  if (value === undefined) return fallback
  try {
    return parseDuration(value)
  } catch (e) {
    throw new UsageError(`--${name}: ${(e as Error).message}`)
  }
}

export async function run(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--')
  const own = dash < 0 ? argv : argv.slice(0, dash)
  const command = dash < 0 ? [] : argv.slice(dash + 1)
  const { values } = parse(own, options)
  if (values.help) {
    process.stdout.write(HELP.replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP_NO_JSON).replace('EXITS', EXIT_TABLE_HELP) + '\n')
    return 0
  }
  // run's stdout is the app's: a JSON report there would be mixed into its output.
  if (values.json) throw new UsageError("--json: run's stdout belongs to the app; --report-file PATH writes run's JSON report to a file")
  const reportFile = values['report-file']
  if (reportFile !== undefined) {
    const problem = reportFile === '' ? 'an empty path' : checkReportPath(reportFile)
    if (problem) throw new UsageError(`--report-file: ${problem}`)
  }
  if (command.length === 0) throw new UsageError('no command: shmkeep run [options] -- COMMAND [ARGS...]')
  const onRestoreError = values['on-restore-error'] ?? 'exit'
  if (onRestoreError !== 'exit' && onRestoreError !== 'start') throw new UsageError('--on-restore-error must be exit or start')
  const snapshotOnExit = values['snapshot-on-exit'] ?? 'always'
  if (!['always', 'success', 'never'].includes(snapshotOnExit)) throw new UsageError('--snapshot-on-exit must be always, success or never')
  const keep = values.keep === undefined ? 2 : Number(values.keep)
  if (!Number.isInteger(keep) || keep < 0) throw new UsageError('--keep must be a whole number')
  const freeze = values.freeze ?? 'sigstop'
  if (!['sigstop', 'cgroup', 'none'].includes(freeze)) throw new UsageError('--freeze must be sigstop, cgroup or none')
  const checkpointInterval = seconds('checkpoint-interval', values['checkpoint-interval'])
  if (checkpointInterval !== undefined && !(checkpointInterval > 0)) throw new UsageError('--checkpoint-interval must be more than 0')
  let rewrite, semFromCheckpoint
  try {
    rewrite = parseRewrites(values.rewrite ?? [])
    semFromCheckpoint = parseSemFromCheckpoint(values['sem-from-checkpoint'])
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  // Never a progress line drawn in place: the app writes to the same terminal.
  const log = makeLogger(values, { terminal: false })
  const report = emptyRunReport(command)
  const runOptions: RunOptions = {
    command,
    stateDir: requireStateDir(values),
    grace: seconds('grace', values.grace, 10)!,
    stopTimeout: seconds('stop-timeout', values['stop-timeout']),
    signalGroup: values['signal-group'],
    rewrite,
    onRestoreError: onRestoreError as 'exit' | 'start',
    acceptNewState: values['accept-new-state'],
    force: values.force,
    snapshotOnExit: snapshotOnExit as 'always' | 'success' | 'never',
    keep,
    filter: filterFrom(values),
    checkpointInterval,
    semFromCheckpoint,
    freeze: freeze as 'sigstop' | 'cgroup' | 'none',
    freezeTimeoutMs: seconds('freeze-timeout', values['freeze-timeout'], 2)! * 1000,
    hooks: { postStart: values['post-start'], preStop: values['pre-stop'], postStop: values['post-stop'] },
    hookTimeout: seconds('hook-timeout', values['hook-timeout'], 5),
    log,
    report,
  }
  let code: number | undefined
  try {
    code = await runApp(runOptions)
    return code
  } catch (e) {
    report.error = (e as Error).message
    throw e
  } finally {
    if (reportFile !== undefined) {
      report.exitStatus = code ?? 1
      try {
        writeRunReport(reportFile, report)
      } catch (e) {
        log.log('error', 'report', `could not write the report to ${reportFile}: ${(e as Error).message}`)
      }
    }
  }
}

export { RUN_EXIT }
