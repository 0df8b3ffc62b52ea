/** `shmkeep generations`: thin over listGenerations() in src/inspect.ts. */
import { humanSize } from '../log'
import { listGenerations, verify } from '../inspect'
import { COMMON_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, parse, printJson, stateDirOption } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep generations --state-dir DIR [--verify] [--json]

List the generations of DIR, oldest first: name, created-at, segments, bytes,
and which one CURRENT names (*).

STATE_DIR
  --verify              check every chunk of each generation (exit 1 if one is damaged)

COMMON`

export const options = { ...commonOptions, ...stateDirOption, verify: { type: 'boolean' } } as const

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('STATE_DIR', STATE_DIR_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const dir = existingStateDir(values)
  const gens = await listGenerations(dir)
  const verified = values.verify ? await verify(dir, 'all') : undefined
  const rows = gens.map((g) => ({ ...g, verified: verified?.generations.find((v) => v.name === g.name)?.ok }))
  if (values.json) {
    printJson('shmkeep.generations', { stateDir: dir, generations: rows })
  } else {
    const lines = rows.map((g) =>
      [
        g.current ? '*' : ' ',
        g.name,
        g.createdAt ?? '-',
        g.error ? `unreadable: ${g.error}` : `${g.segments} segment(s)${g.objects ? ` + ${g.objects} other object(s)` : ''}, ${humanSize(g.bytes ?? 0)}`,
        g.side ? 'side' : '',
        g.consistency ?? '',
        g.unsaved ? `PARTIAL: ${g.unsaved} object(s) not saved` : '',
        g.verified === undefined ? '' : g.verified ? 'verifies' : 'DAMAGED',
      ].filter(Boolean).join('  '),
    )
    process.stdout.write((lines.length ? lines.join('\n') : '(no generations)') + '\n')
  }
  return verified && !verified.ok ? EXIT.failed : EXIT.ok
}
