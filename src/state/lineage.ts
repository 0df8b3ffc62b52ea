/**
 * Lineage: which generation the live state of this IPC namespace descends
 * from. A snapshot switches CURRENT only when it knows that (CURRENT is then
 * its parent); otherwise it is written beside CURRENT.
 *
 * The record lives in the IPC namespace itself — a SysV message queue of
 * shmkeep's own, not a file in the state dir — so that it:
 *  - survives whatever the app does to its own objects (remove, recreate,
 *    resize any or all of them: a file keyed by segment ids and change times
 *    could not tell a same-second recreate from the original);
 *  - dies with the namespace, so a new namespace that reuses a dead one's
 *    inode number or ids can never inherit it;
 *  - is written by a restore from a read-only state dir too.
 * A queue, not a shm segment: with kernel.shm_rmid_forced=1 a segment dies
 * with the process that created it.
 *
 * Its key comes from a random id stored once in the state dir (LINEAGE), so
 * several state dirs used in one namespace each have their own. It is created
 * IPC_EXCL; on a collision with somebody else's object, a fallback key. It
 * holds one message: the state dir's id, a random 128-bit token naming this
 * namespace's line, and the parent generation. It is marked by its msg_qbytes
 * (LINEAGE_QBYTES) so that listings, snapshots and filters leave it out
 * without reading it.
 */
import { createHash, randomBytes } from 'node:crypto'
import { hasCode } from '../errors'
import type { SegmentFilter } from '../filter'
import { liveSavedObjects } from '../kinds'
import * as msg from '../msg'
import { readRegularFile, replaceFile, StateFileError } from './files'
import type { StateDir } from './statedir'

/** The file holding the state dir's random lineage id. */
export const LINEAGE_FILE = 'LINEAGE'
/** msg_qbytes of a lineage queue: lowering it needs no privilege, and it marks the queue as ours. */
export const LINEAGE_QBYTES = 4091
const MAGIC = 'shmkeep-lineage'
const TYPE = 1

/** Whether a queue is a lineage record (left out of listings, snapshots and filters). */
export function isLineageQueue(q: { qbytes: number; mode: number }): boolean {
  return q.qbytes === LINEAGE_QBYTES && (q.mode & 0o777) === 0o600
}

/** What this namespace's record says. */
export interface LineageRecord {
  /** The queue's id and key. */
  id: number
  key: number
  /** Random 128 bits (hex) naming this namespace's line of generations. */
  token: string
  /** The generation the live state descends from; null: a first start (nothing was restored). */
  generation: string | null
}

export type Lineage = { known: true; record: LineageRecord } | { known: false; why: string }

/** The state dir's random id (LINEAGE), created when missing and `create`. */
function stateId(state: StateDir, create: boolean): string | undefined {
  const file = state.path(LINEAGE_FILE)
  try {
    const m = /^shmkeep-lineage-id ([0-9a-f]{32})\n$/.exec(readRegularFile(file, 256).toString('latin1'))
    if (m) return m[1]
    throw new StateFileError(file, 'is not a lineage id file (shmkeep-lineage-id and 32 hex digits)')
  } catch (e) {
    if (!(e instanceof StateFileError && e.code === 'ENOENT')) throw e
    if (!create) return undefined
  }
  const id = randomBytes(16).toString('hex')
  replaceFile(file, `shmkeep-lineage-id ${id}\n`)
  return id
}

/** The primary and the fallback key for an id: never IPC_PRIVATE (0) or -1. */
function keysOf(id: string): number[] {
  return [0, 1].map((n) => {
    const k = createHash('sha256').update(`${id}:${n}`).digest().readUInt32LE(0)
    return k === 0 || k === 0xffffffff ? 0x5348 + n : k
  })
}

function encode(id: string, token: string, generation: string | null): string {
  return `${MAGIC} 1 ${id} ${token} ${generation ?? '-'}`
}

function decode(id: string, data: Buffer): { token: string; generation: string | null } | undefined {
  const m = /^shmkeep-lineage 1 ([0-9a-f]{32}) ([0-9a-f]{32}) ((?:quarantine-)?gen-\d{12}(?:\.\d+)?|-)$/.exec(data.toString('latin1'))
  if (!m || m[1] !== id) return undefined
  return { token: m[2]!, generation: m[3] === '-' ? null : m[3]! }
}

/** The message of queue `q` without taking it (MSG_COPY), or by taking it and sending it back. */
function readMessage(q: number): Buffer | undefined {
  try {
    return msg.peek(q, 0)?.data ?? undefined
  } catch (e) {
    if (!hasCode(e, 'ENOSYS')) throw e
  }
  // No MSG_COPY on this kernel: take it and put it back (only shmkeep, under
  // the state dir's lock, touches this queue).
  const m = msg.receive(q)
  if (!m) return undefined
  msg.send(q, m.type, m.data)
  return m.data
}

/** This namespace's lineage queue for `id`: found at its key or its fallback key. */
function find(id: string): LineageRecord | undefined {
  for (const key of keysOf(id)) {
    let q: number
    try {
      q = msg.get(key)
    } catch {
      continue // no queue at this key (or not ours to read)
    }
    try {
      const st = msg.stat(q)
      if (!isLineageQueue(st)) continue
      const data = readMessage(q)
      const rec = data && decode(id, data)
      if (rec) return { id: q, key, ...rec }
    } catch {
      // removed meanwhile, or not readable by us: not ours
    }
  }
  return undefined
}

/** What the lineage record of this namespace says for this state dir. */
export function readLineage(state: StateDir): Lineage {
  let id: string | undefined
  try {
    id = stateId(state, false)
  } catch (e) {
    return { known: false, why: `the state dir's ${LINEAGE_FILE} cannot be read (${(e as Error).message})` }
  }
  if (!id) return { known: false, why: `no lineage record in this IPC namespace (this state dir never recorded one: ${LINEAGE_FILE} is missing)` }
  const record = find(id)
  if (!record) return { known: false, why: 'no lineage record in this IPC namespace (it was never restored from this state dir, or its record was removed, e.g. by ipcrm -a)' }
  return { known: true, record }
}

/** Something that can be taken back (a failed restore undoes its lineage record with its segments). */
export interface Undo {
  undo(): void
}

/**
 * Record that the live state of this namespace now descends from
 * `generation` (null: a first start). Replaces the message of an existing
 * record (keeping its token unless `newLine`), or creates the queue. Call
 * under the state dir's lock. Throws when it cannot be recorded; the
 * returned undo puts back what was there.
 */
export function writeLineage(state: StateDir, generation: string | null, { newLine = false } = {}): Undo {
  const id = stateId(state, true)!
  const existing = find(id)
  if (existing) {
    const before = encode(id, existing.token, existing.generation)
    const token = newLine ? randomBytes(16).toString('hex') : existing.token
    replaceMessage(existing.id, encode(id, token, generation))
    return { undo: () => replaceMessage(existing.id, before) }
  }
  const token = randomBytes(16).toString('hex')
  for (const key of keysOf(id)) {
    let q: number
    try {
      q = msg.get(key, { create: true, exclusive: true, mode: 0o600 })
    } catch (e) {
      if (hasCode(e, 'EEXIST')) continue // somebody else's object at this key: the fallback
      throw e
    }
    try {
      msg.set(q, { qbytes: LINEAGE_QBYTES })
      if (!msg.send(q, TYPE, encode(id, token, generation))) throw new Error('the new lineage queue is full')
    } catch (e) {
      msg.remove(q)
      throw e
    }
    return {
      undo: () => {
        try {
          msg.remove(q)
        } catch {
          // gone already
        }
      },
    }
  }
  throw new Error(`both lineage keys (${keysOf(id).map((k) => '0x' + k.toString(16).padStart(8, '0')).join(', ')}) are taken by other objects in this IPC namespace`)
}

function replaceMessage(q: number, text: string): void {
  while (msg.receive(q)) {
    // drop the old record
  }
  if (!msg.send(q, TYPE, text)) throw new Error('the lineage queue is full')
}

/** Remove this namespace's lineage record for the state dir, if any (tests, and `ipcrm` by hand does the same). */
export function removeLineage(state: StateDir): boolean {
  const id = stateId(state, false)
  const rec = id && find(id)
  if (!rec) return false
  msg.remove(rec.id)
  return true
}

/** Whether this namespace already holds state that a restore must not overwrite. */
export interface Warmth {
  warm: boolean
  /** Why (for the log). */
  why: string
  lineage: Lineage
  /** The objects saved in CURRENT that are live here ("segment 0x00005100", "semaphore set 0x… (id 3)"). */
  live: string[]
}

/**
 * The one definition of a **warm** namespace, used by `run`, `restore` and
 * the library: the lineage record exists, or any object saved in CURRENT is
 * live — and no restore in this namespace is unfinished (a killed restore's
 * leftovers are not state). A Kubernetes container restarted inside its pod
 * finds its namespace warm: its live objects are newer than any snapshot.
 */
export function warmth(state: StateDir, ns: string, liveKeys: ReadonlySet<string>, filter?: SegmentFilter): Warmth {
  const lineage = readLineage(state)
  const restoring = state.readRestoring()
  if (restoring && 'ns' in restoring && restoring.ns === ns) return { warm: false, why: 'a restore in this namespace is unfinished', lineage, live: [] }
  const saved = liveSaved(state, liveKeys, filter)
  const live = 'live' in saved ? saved.live : []
  if (lineage.known) {
    return { warm: true, why: `this IPC namespace already holds the state of ${lineage.record.generation ?? 'a first start'} (its lineage record is here)`, lineage, live }
  }
  if ('why' in saved) return { warm: false, why: saved.why, lineage, live }
  if (live.length) return { warm: true, why: `objects saved in ${saved.generation} are live here already: ${live.join(', ')}`, lineage, live }
  return { warm: false, why: 'no saved object is live here', lineage, live }
}

/** The objects saved in CURRENT that are live here, or why that cannot be known. */
function liveSaved(state: StateDir, liveKeys: ReadonlySet<string>, filter?: SegmentFilter): { generation: string; live: string[] } | { why: string } {
  const current = state.readCurrent()
  if (!('name' in current) || current.name === null) return { why: 'nothing saved' }
  try {
    const gen = state.readGeneration(current.name)
    const saved = gen.segments.map((s) => s.key).filter((k) => k !== '0x00000000')
    const objects = liveSavedObjects(gen.objects, filter) // objects of the generation that are live (of the kinds taken: POSIX shm only in a container, or asked)
    return { generation: current.name, live: [...saved.filter((k) => liveKeys.has(k)).map((k) => `segment ${k}`), ...objects] }
  } catch {
    return { why: `${current.name} is unreadable` }
  }
}
