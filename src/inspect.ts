/**
 * Looking at a state dir and at the live namespace: generations, their
 * metadata, whether their bytes verify, pruning, and live-versus-saved.
 */
import { cancelTokenFor } from './cancel'
import { segmentPredicate, type SegmentFilter } from './filter'
import { currentPowers, readIdentity } from './identity'
import { formatKey, parseKey } from './keys'
import { diffObjects, verifyObjects, type DiffStatus, type ObjectDiff } from './kinds'
import { silentLogger, startProgress, type Logger, type ProgressHandle } from './log'
import { native, type CancelToken } from './native'
import { checkEntryOptions, checkStateDir } from './options'
import * as shm from './shm'
import { StateFileError } from './state/files'
import { verifySaved } from './state/segdata'
import type { Consistency, GenerationRecord, SegmentRecord } from './state/format'
import { prune as pruneGenerations, type PruneResult } from './state/prune'
import { readLineage } from './state/lineage'
import { StateDir, safeName } from './state/statedir'
import { ipcNamespaceId, segmentMemory } from './system'

export interface GenerationSummary {
  name: string
  seq: number
  /** Whether CURRENT names it. */
  current: boolean
  createdAt?: string
  parent?: string | null
  reason?: string
  clean?: boolean
  side?: boolean
  /** How the image was taken: stopped, frozen, live (may be torn), unknown (format 1). */
  consistency?: Consistency
  /** Objects of any kind it could not save (a partial generation). */
  unsaved?: number
  segments?: number
  /** Objects of the other kinds (semaphore sets, queues, POSIX objects) it holds. */
  objects?: number
  bytes?: number
  /** Why its GENERATION file cannot be read. */
  error?: string
  /** Moved aside after failing verification (`restore --generation` takes it by this name). */
  quarantined?: boolean
}

/** Every generation of a state dir, oldest first (a Promise since 0.2.0, as everything that reads the state dir). */
export async function listGenerations(stateDir: string): Promise<GenerationSummary[]> {
  checkStateDir('listGenerations', stateDir)
  const state = StateDir.open(stateDir)
  const current = state.readCurrent()
  const currentName = 'name' in current ? current.name : null
  const all = [...state.generations(), ...state.quarantined().map((g) => ({ ...g, quarantined: true }))].sort((a, b) => a.seq - b.seq)
  return all.map((g) => {
    const base = { name: g.name, seq: g.seq, current: g.name === currentName, ...('quarantined' in g ? { quarantined: true } : {}) }
    try {
      const r = state.readGeneration(g.name)
      return {
        ...base,
        createdAt: r.createdAt,
        parent: r.parent,
        reason: r.reason,
        clean: r.clean,
        side: r.side,
        consistency: r.consistency,
        unsaved: (r.unsaved?.length ?? 0) + (r.objects?.unsaved.length ?? 0),
        segments: r.segments.length,
        objects: r.objects?.records.length ?? 0,
        bytes: r.bytes,
      }
    } catch (e) {
      return { ...base, error: e instanceof Error ? e.message : String(e) }
    }
  })
}

export interface SegmentVerification {
  key: string
  id: number
  size: number
  ok: boolean
  /** Chunks whose checksum does not match. */
  badChunks: number[]
  /** What is wrong when it is not a chunk (a missing or damaged file). */
  error?: string
  bytesRead: number
}

export interface GenerationVerification {
  name: string
  ok: boolean
  /** The GENERATION file itself cannot be read. */
  error?: string
  segments: SegmentVerification[]
  /** Semaphore sets and message queues: their packed data checked against each record. */
  objects: ReturnType<typeof verifyObjects>
}

export interface VerifyReport {
  ok: boolean
  generations: GenerationVerification[]
}

async function verifyOne(state: StateDir, name: string, log: Logger): Promise<GenerationVerification> {
  let gen: GenerationRecord
  try {
    gen = state.readGeneration(name)
  } catch (e) {
    return { name, ok: false, error: (e as Error).message, segments: [], objects: verifyObjects(state.path(name), undefined) }
  }
  const segments: SegmentVerification[] = []
  const progress = startProgress(log, `verify ${name}`, gen.segments.reduce((n, s) => n + s.size, 0))
  try {
    await verifySegments(state, name, gen, segments, progress, cancelTokenFor(undefined, progress))
  } finally {
    progress.end()
  }
  const objects = verifyObjects(state.path(name), gen.objects)
  return { name, ok: segments.every((s) => s.ok) && objects.ok, segments, objects }
}

async function verifySegments(state: StateDir, name: string, gen: GenerationRecord, segments: SegmentVerification[], progress: ProgressHandle, counted: CancelToken | undefined): Promise<void> {
  for (const entry of gen.segments) {
    segments.push(await verifyEntry(state, name, entry, counted))
    progress.advance(entry.size)
  }
}

async function verifyEntry(state: StateDir, name: string, entry: GenerationRecord['segments'][number], counted: CancelToken | undefined): Promise<SegmentVerification> {
  const base = { key: entry.key, id: entry.id, size: entry.size, badChunks: [] as number[], bytesRead: 0 }
  let meta: SegmentRecord
  try {
    meta = state.readSegment(name, entry)
    safeName(meta.data)
  } catch (e) {
    return { ...base, ok: false, error: (e as Error).message }
  }
  try {
    const r = await verifySaved(state.path(name, meta.data), meta, { cancel: counted })
    return { ...base, ok: r.badChunks.length === 0, badChunks: r.badChunks, bytesRead: r.bytesRead }
  } catch (e) {
    return { ...base, ok: false, error: `${meta.data}: ${(e as Error).message}` }
  }
}

/**
 * Check every chunk of a generation (default: CURRENT; 'all': every one)
 * against its checksum.
 */
export async function verify(stateDir: string, generation?: string | 'all', options: { signal?: AbortSignal; log?: Logger } = {}): Promise<VerifyReport> {
  checkStateDir('verify', stateDir), checkEntryOptions('verify', options)
  const state = StateDir.open(stateDir)
  let names: string[]
  if (generation === 'all') {
    names = state.generations().map((g) => g.name)
  } else if (generation) {
    names = [state.generationDir(generation)] // 'no such generation', never DAMAGED
  } else {
    const current = state.readCurrent()
    if ('error' in current) throw new StateFileError(state.path('CURRENT'), current.error)
    if (current.name === null) throw new StateFileError(state.path('CURRENT'), 'is missing: nothing to verify (give a generation or --all)', 'ENOENT')
    names = [current.name]
  }
  const generations: GenerationVerification[] = []
  for (const name of names) {
    options.signal?.throwIfAborted()
    generations.push(await verifyOne(state, name, options.log ?? silentLogger))
  }
  return { ok: generations.every((g) => g.ok), generations }
}

/** One generation with its segments' saved metadata (the chunk tables left out). */
export interface GenerationDetail {
  name: string
  current: boolean
  generation: Omit<GenerationRecord, 'segments'>
  segments: Array<Omit<SegmentRecord, 'chunks'> | { key: string; id: number; size: number; error: string }>
}

/** The saved metadata of one generation (default: CURRENT). */
export async function inspect(stateDir: string, generation?: string): Promise<GenerationDetail> {
  checkStateDir('inspect', stateDir)
  const state = StateDir.open(stateDir)
  const current = state.readCurrent()
  const currentName = 'name' in current ? current.name : null
  const name = generation ?? currentName
  if (!name) throw new StateFileError(state.path('CURRENT'), 'error' in current ? current.error : 'is missing: give a generation', 'ENOENT')
  const record = state.readGeneration(name)
  const { segments: entries, ...generationFields } = record
  const segments = entries.map((entry) => {
    try {
      const { chunks: _chunks, ...meta } = state.readSegment(name, entry)
      return meta
    } catch (e) {
      return { key: entry.key, id: entry.id, size: entry.size, error: (e as Error).message }
    }
  })
  return { name, current: name === currentName, generation: generationFields, segments }
}

/** Remove old generations (never what CURRENT names, nor the newest clean one), under the writer lock. */
export async function prune(stateDir: string, options: { keep: number; dryRun?: boolean; log?: Logger }): Promise<PruneResult> {
  checkStateDir('prune', stateDir), checkEntryOptions('prune', options)
  if (!Number.isInteger(options.keep) || options.keep < 1) throw new RangeError('keep must be at least 1')
  const state = StateDir.open(stateDir)
  const lock = await state.lock()
  try {
    return pruneGenerations(state, { keep: options.keep, dryRun: options.dryRun, protect: [lineageParent(state)], log: options.log })
  } finally {
    lock.release()
  }
}

export type { DiffStatus, ObjectDiff }

export interface SegmentDiff {
  key: string
  /** Live id, or the saved one for a removed segment. */
  id: number
  status: DiffStatus
  /** For changed: what differs. */
  changes?: string[]
  /** For changed data: how many chunks differ. */
  chunksChanged?: number
}

export interface DiffReport {
  generation: string | null
  segments: SegmentDiff[]
  /** Semaphore sets, message queues, POSIX shm objects and POSIX queues the filter takes. */
  objects: ObjectDiff[]
  /** What could not be compared (a kind the generation did not look at, a /dev/mqueue of another namespace). */
  notes: string[]
}

/**
 * Live objects of every kind against CURRENT: added, removed, changed,
 * unchanged. Segments: size, mode, owner, or chunk checksums (each live
 * segment read once, checksums only, nothing written; pages never touched
 * are not read). The other kinds: mode, owner, their attributes and their
 * contents (src/kinds: diffObjects), POSIX queues without their messages.
 */
export async function diff(stateDir: string, filter?: SegmentFilter, options: { signal?: AbortSignal } = {}): Promise<DiffReport> {
  checkStateDir('diff', stateDir), checkEntryOptions('diff', filter, 'diff: filter'), checkEntryOptions('cancellable', options, 'diff')
  options.signal?.throwIfAborted()
  const state = StateDir.open(stateDir)
  const current = state.readCurrent()
  if ('error' in current) throw new StateFileError(state.path('CURRENT'), current.error)
  const take = segmentPredicate(filter)
  const live = shm.list().filter((s) => !s.dest && take(s))
  const gen = current.name ? state.readGeneration(current.name) : undefined
  const saved = gen ? gen.segments.map((e) => state.readSegment(current.name!, e)) : []
  const keyOf = (key: number, id: number) => (key === 0 ? `private:${id}` : formatKey(key))
  const savedBy = new Map(saved.map((m) => [keyOf(parseKey(m.key), m.id), m]))
  const powers = currentPowers()
  const memory = segmentMemory()
  const out: SegmentDiff[] = []
  for (const s of live) {
    options.signal?.throwIfAborted()
    const k = keyOf(s.key, s.id)
    const m = savedBy.get(k)
    savedBy.delete(k)
    if (!m) {
      out.push({ key: formatKey(s.key), id: s.id, status: 'added' })
      continue
    }
    const changes: string[] = []
    if (m.size !== s.size) changes.push(`size ${m.size} → ${s.size}`)
    if (m.mode !== s.mode) changes.push(`mode ${m.mode.toString(8)} → ${s.mode.toString(8)}`)
    if (m.uid !== s.uid || m.gid !== s.gid) changes.push(`owner ${m.uid}:${m.gid} → ${s.uid}:${s.gid}`)
    let chunksChanged: number | undefined
    if (m.size === s.size) {
      const who = readIdentity(s, powers)
      if ('error' in who) {
        changes.push(`data not compared: ${who.error}`)
      } else {
        const r = await native.saveSegment({ id: s.id, uid: who.uid, gid: who.gid, path: null, chunkSize: m.chunkSize, skipAbsent: (memory.get(s.id)?.swap ?? 1) === 0, fsync: false })
        const before = Buffer.from(m.chunks, 'base64')
        chunksChanged = 0
        for (let i = 0; i < r.chunks.length; i += 8) if (r.chunks.readUInt32LE(i) !== before.readUInt32LE(i)) chunksChanged++
        if (chunksChanged) changes.push(`${chunksChanged} of ${m.chunkCount} chunk(s) differ`)
      }
    }
    out.push({ key: formatKey(s.key), id: s.id, status: changes.length ? 'changed' : 'unchanged', ...(changes.length ? { changes } : {}), ...(chunksChanged ? { chunksChanged } : {}) })
  }
  for (const m of savedBy.values()) out.push({ key: m.key, id: m.id, status: 'removed' })
  const objects = diffObjects(current.name ? state.path(current.name) : null, gen?.objects, filter, powers, options.signal)
  return { generation: current.name, segments: out, ...objects }
}

/** The live segments of this IPC namespace that the filter takes (`shmkeep ls`). */
export function list(filter?: SegmentFilter): shm.ShmStat[] {
  checkEntryOptions('list', filter, 'list: filter')
  return shm.list().filter(segmentPredicate(filter)).sort((a, b) => a.id - b.id)
}

/** The generation this namespace's live state descends from, when its lineage record says so. */
function lineageParent(state: StateDir): string | null {
  const l = readLineage(state)
  return l.known ? l.record.generation : null
}
