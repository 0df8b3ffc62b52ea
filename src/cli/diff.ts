/** `shmkeep diff`: live segments against CURRENT. */
import { diff } from '../inspect'
import { COMMON_HELP, FILTER_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, filterFrom, filterOptions, parse, printJson, stateDirOption } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep diff --state-dir DIR [filters] [--json]

The live segments of this IPC namespace against DIR's CURRENT generation:
added, removed, changed (size, mode, owner, or chunk checksums), unchanged.

STATE_DIR

FILTERS

COMMON`

export const options = { ...commonOptions, ...stateDirOption, ...filterOptions } as const

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('STATE_DIR', STATE_DIR_HELP).replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const r = await diff(existingStateDir(values), filterFrom(values))
  if (values.json) {
    printJson('shmkeep.diff', r)
  } else {
    process.stdout.write(`live against ${r.generation ?? '(no CURRENT)'}:\n`)
    for (const s of r.segments) process.stdout.write(`  ${s.status.padEnd(9)} ${s.key} (id ${s.id})${s.changes ? ': ' + s.changes.join('; ') : ''}\n`)
  }
  return EXIT.ok
}
