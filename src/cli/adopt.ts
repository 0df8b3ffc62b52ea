/** `shmkeep adopt`: thin over adopt() in src/adopt.ts. */
import { adopt } from '../adopt'
import { COMMON_HELP, commonOptions, lockTimeoutMs, makeLogger, parse, printJson, requireStateDir, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep adopt --state-dir DIR GENERATION

Make GENERATION — one written beside CURRENT because its lineage was unknown
or another writer had moved CURRENT — the CURRENT generation, once every
chunk of it verifies. \`shmkeep run\` (exit 123) and \`shmkeep snapshot\` (exit 3)
print this command with the generation's name when they write one.

  -s, --state-dir DIR      where generations live; SHMKEEP_STATE_DIR
  --lock-timeout SEC       give up waiting for the state dir's lock after SEC seconds
COMMON

Exit codes: 0 CURRENT names GENERATION; 1 it does not verify or cannot be
read (CURRENT unchanged); 2 usage.`

const options = { ...commonOptions, ...stateDirOption, 'lock-timeout': { type: 'string' } } as const

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, options, { positionals: true })
  if (values.help) {
    process.stdout.write(HELP.replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  if (positionals.length !== 1) throw new UsageError('give the generation to adopt, e.g. shmkeep adopt -s DIR gen-000000000043')
  const report = await adopt({ stateDir: requireStateDir(values), generation: positionals[0]!, lockTimeoutMs: lockTimeoutMs(values), log: makeLogger(values) })
  if (values.json) printJson('shmkeep.adopt', report)
  return EXIT.ok
}
