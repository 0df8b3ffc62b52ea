/** `shmkeep ls`: the live segments, like `ipcs -m` plus what matters here. */
import { humanSize } from '../log'
import { list } from '../inspect'
import { formatKey } from '../keys'
import { liveObjectRows, liveObjects, OBJECT_COLUMNS } from '../kinds'
import { COMMON_HELP, FILTER_HELP, commonOptions, filterFrom, filterOptions, parse, printJson } from './common'
import { EXIT } from './errors'
import { table } from './table'

const HELP = `Usage: shmkeep ls [filters] [--json]

The SysV shared memory segments of this IPC namespace: key, id, size, mode,
owner, attach count, creator pid, last attach/detach times, flags; then its
semaphore sets and message queues (like ipcs -s and ipcs -q).
FILTERS
COMMON`

export const options = { ...commonOptions, ...filterOptions } as const

function time(t: number): string {
  return t === 0 ? '-' : new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19)
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, options)
  if (values.help) {
    process.stdout.write(HELP.replace('FILTERS', FILTER_HELP).replace('COMMON', COMMON_HELP) + '\n')
    return EXIT.ok
  }
  const filter = filterFrom(values)
  const segments = list(filter)
  const live = liveObjects(filter)
  const objects = live.objects.filter((o) => o.kind !== 'shm')
  if (values.json) {
    // A POSIX object's key is its name.
    printJson('shmkeep.ls', { segments: segments.map((s) => ({ ...s, key: formatKey(s.key) })), objects: objects.map((o) => ({ ...o, key: o.name ?? formatKey(o.key) })), notes: live.notes })
    return EXIT.ok
  }
  for (const n of live.notes) process.stderr.write(`shmkeep ls: ${n}\n`)
  const flags = (s: (typeof segments)[number]) => [s.dest ? 'dest' : '', s.locked ? 'locked' : ''].filter(Boolean).join(',') || '-'
  process.stdout.write(
    table(
      ['KEY', 'ID', 'SIZE', 'BYTES', 'MODE', 'OWNER', 'NATTCH', 'CPID', 'ATTACHED', 'DETACHED', 'FLAGS'],
      segments.map((s) => [formatKey(s.key), String(s.id), humanSize(s.size), String(s.size), s.mode.toString(8).padStart(4, '0'), `${s.uid}:${s.gid}`, String(s.nattch), String(s.cpid), time(s.atime), time(s.dtime), flags(s)]),
    ),
  )
  if (objects.length) process.stdout.write('\n' + table(OBJECT_COLUMNS, liveObjectRows(objects)))
  return EXIT.ok
}
