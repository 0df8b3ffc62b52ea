/** `shmkeep diff`: live objects of every kind against CURRENT. */
import { diff } from '../inspect'
import { describe } from '../kinds/kind'
import { COMMON_HELP, FILTER_HELP, STATE_DIR_HELP, commonOptions, existingStateDir, filterFrom, filterOptions, parse, printJson, stateDirOption } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep diff --state-dir DIR [filters] [--json]

The live objects of this IPC namespace against DIR's CURRENT generation:
added, removed, changed, unchanged. Segments: size, mode, owner, or chunk
checksums. Semaphore sets: mode, owner, nsems, values. Message queues:
mode, owner, msg_qbytes, message count and bytes, the messages (read with
MSG_COPY, not removed). POSIX shm objects (--kind posix-shm outside a
container): size, mode, owner, contents. POSIX message queues: mode, owner,
mq_maxmsg, mq_msgsize, message count; not the messages (a POSIX queue
cannot be read without taking them out). Nothing is written or removed.

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
    for (const o of r.objects) {
      const what = [...(o.changes ?? []), ...(o.notCompared ? [`(${o.notCompared})`] : [])]
      process.stdout.write(`  ${o.status.padEnd(9)} ${describe({ ...o, id: o.id ?? 0 })}${what.length ? ': ' + what.join('; ') : ''}\n`)
    }
    for (const n of r.notes) process.stderr.write(`shmkeep diff: ${n}\n`)
  }
  return EXIT.ok
}
