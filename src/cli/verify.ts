/** `shmkeep verify`: thin over verify() in src/inspect.ts. */
import { verify } from '../inspect'
import { COMMON_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, makeLogger, parse, printJson, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep verify --state-dir DIR [GENERATION | --all]

Check every chunk of CURRENT (or GENERATION, or every generation) against its
checksum, and every saved semaphore set and message queue against its own.
Names each bad segment and chunk, and each bad object.

STATE_DIR
  --all                 every generation, not only CURRENT

COMMON

Exit codes: 0 all verify; 1 something is damaged; 2 usage.`

export const options = { ...commonOptions, ...stateDirOption, all: { type: 'boolean' } } as const

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, options, { positionals: true })
  if (values.help) {
    process.stdout.write(HELP.replace('STATE_DIR', STATE_DIR_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  if (positionals.length > 1 || (positionals.length && values.all)) throw new UsageError('give one generation, or --all')
  const report = await verify(existingStateDir(values), values.all ? 'all' : positionals[0], { log: makeLogger(values) })
  if (values.json) {
    printJson('shmkeep.verify', report)
  } else {
    for (const g of report.generations) {
      process.stdout.write(`${g.name}: ${g.ok ? 'ok' : 'DAMAGED'}${g.error ? ` (${g.error})` : ''}\n`)
      for (const s of g.segments) {
        if (s.ok) continue
        const what = s.error ?? `chunk(s) ${s.badChunks.join(', ')} fail their checksum`
        process.stdout.write(`  segment ${s.key} (saved id ${s.id}): ${what}\n`)
      }
      for (const p of g.objects.problems) process.stdout.write(`  ${p}\n`)
    }
  }
  return report.ok ? EXIT.ok : EXIT.failed
}
