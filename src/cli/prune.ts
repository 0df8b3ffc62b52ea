/** `shmkeep prune`: remove old generations. */
import { prune } from '../inspect'
import { COMMON_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, makeLogger, parse, printJson, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep prune --state-dir DIR --keep N [--dry-run]

Remove all but the newest N generations. Never removes what CURRENT names,
the generation the live state descends from, or the newest taken at a clean
stop.

STATE_DIR
  --keep N              how many generations to keep (at least 1)
  --dry-run             only say what would go

COMMON`

export const options = { ...commonOptions, ...stateDirOption, keep: { type: 'string' }, 'dry-run': { type: 'boolean' } } as const

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('STATE_DIR', STATE_DIR_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const keep = Number(values.keep)
  if (values.keep === undefined || !Number.isInteger(keep) || keep < 1) throw new UsageError('--keep N (at least 1) is required')
  const r = await prune(existingStateDir(values), { keep, dryRun: values['dry-run'], log: makeLogger(values) })
  if (values.json) {
    printJson('shmkeep.prune', { dryRun: values['dry-run'] === true, ...r })
  } else {
    for (const name of r.removed) process.stdout.write(`${values['dry-run'] ? 'would remove' : 'removed'} ${name}\n`)
    for (const k of r.kept) process.stdout.write(`kept ${k.name}: ${k.why}\n`)
  }
  return EXIT.ok
}
