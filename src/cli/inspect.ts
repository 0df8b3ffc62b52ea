/** `shmkeep inspect`: the saved metadata of one generation. */
import { humanSize } from '../log'
import { inspect } from '../inspect'
import { OBJECT_COLUMNS, savedObjectRows } from '../kinds'
import { COMMON_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, parse, printJson, stateDirOption, UsageError } from './common'
import { EXIT } from './errors'
import { table } from './table'

const HELP = `Usage: shmkeep inspect --state-dir DIR [GENERATION] [--json]

The segments of one generation (default: CURRENT) with their saved metadata.

STATE_DIR

COMMON`

export const options = { ...commonOptions, ...stateDirOption } as const

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, options, { positionals: true })
  if (values.help) {
    process.stdout.write(HELP.replace('STATE_DIR', STATE_DIR_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  if (positionals.length > 1) throw new UsageError('give at most one generation')
  const d = await inspect(existingStateDir(values), positionals[0])
  if (values.json) {
    printJson('shmkeep.inspect', d)
    return EXIT.ok
  }
  const g = d.generation
  process.stdout.write(
    `${d.name}${d.current ? ' (CURRENT)' : ''}: ${g.reason} snapshot at ${g.createdAt} on ${g.hostname}, parent ${g.parent ?? '-'}` +
      `, ${g.consistency}${g.consistency === 'live' ? ' (may be torn across chunks)' : ''}` +
      `${g.attachers?.length ? `, attached by ${g.attachers.map((a) => a.pid).join(', ')}` : ''}` +
      `${g.side ? `, SIDE: ${g.sideReason}` : ''}\n`,
  )
  for (const u of g.unsaved ?? []) {
    process.stdout.write(`NOT SAVED: segment ${u.key} (id ${u.id}, ${humanSize(u.size)}, mode ${u.mode.toString(8).padStart(4, '0')}, owner ${u.uid}:${u.gid}): ${u.errno}: ${u.reason}; ${u.remedy}\n`)
  }
  process.stdout.write(
    table(
      ['KEY', 'ID', 'SIZE', 'MODE', 'OWNER', 'CREATOR', 'PAGE', 'CHUNKS', 'ZERO'],
      d.segments.map((s) =>
        'error' in s
          ? [s.key, String(s.id), humanSize(s.size), `unreadable: ${s.error}`]
          : [s.key, String(s.id), humanSize(s.size), s.mode.toString(8).padStart(4, '0'), `${s.uid}:${s.gid}`, `${s.cuid}:${s.cgid}`, humanSize(s.pageSize), String(s.chunkCount), String(s.zeroChunks)],
      ),
    ),
  )
  if (g.objects) process.stdout.write('\n' + table(OBJECT_COLUMNS, savedObjectRows(g.objects)))
  return d.segments.some((s) => 'error' in s) ? EXIT.failed : EXIT.ok
}
