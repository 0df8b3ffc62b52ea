/**
 * Snapshot: save every SysV segment of this IPC namespace into a new
 * generation of the state dir, durably, then switch CURRENT to it.
 *
 * Read top to bottom, {@link snapshot} does: lock the state dir; freeze the
 * app (a checkpoint); list the segments; copy each into the new generation
 * (src/state/writer.ts owns the files, their fsyncs and the CURRENT switch);
 * look at the segments again (one removed meanwhile is dropped, never saved
 * twice); decide whether CURRENT may move (src/state/side.ts); commit; switch;
 * prune. Segments that vanish are not failures; a segment that cannot be read
 * is recorded as unsaved and costs none of the others (src/outcome.ts maps
 * the outcome to exit codes). Only the disk (a write, an fsync) fails the
 * whole snapshot, and then the generation is abandoned, never half-kept.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { errnoName, hasCode, systemError } from './errors'
import { segmentPredicate, type SegmentFilter } from './filter'
import { currentPowers, readIdentity, type Identity, type Powers } from './identity'
import { formatKey } from './keys'
import { countObjects, saveObjects, type ObjectOutcome, type UnsavedObject } from './kinds'
import type { FileLock } from './lock'
import { humanDuration, humanSize, silentLogger, startProgress, type Logger } from './log'
import { lanesFor } from './lanes'
import { cancelTokenFor, isCancelled } from './cancel'
import { native, type CancelToken } from './native'
import { checkEntryOptions } from './options'
import { snapshotOutcome, type SnapshotOutcome } from './outcome'
import { holesHere, type Holes } from './residency'
import * as shm from './shm'
import { encodeCheckedJson } from './state/files'
import {
  CHUNK_DATA,
  CHUNK_ENTRY_BYTES,
  FORMAT,
  PACK_DATA,
  segmentStem,
  type PackedRecord,
  type Consistency,
  type FileStamp,
  type GenerationRecord,
  type SegmentEntry,
  type SegmentIdentity,
  type SegmentRecord,
  type SnapshotReason,
  type UnsavedRecord,
} from './state/format'
import { checkPlan, stampOf } from './state/stamp'
import { prune, type PruneResult } from './state/prune'
import { readLineage, writeLineage, type Lineage } from './state/lineage'
import { decideSide } from './state/side'
import { StateDir } from './state/statedir'
import { GenerationWriter } from './state/writer'
import { ipcNamespaceId, segmentMemory } from './system'
import { version } from './cli/version'

/** Default chunk: large writes, and a small table (1024 entries for 4 GiB). */
export const DEFAULT_CHUNK_SIZE = 4 << 20

export interface SnapshotOptions {
  /** The state directory (created 0700 if missing). */
  stateDir: string
  /** Which segments (default: all). */
  filter?: SegmentFilter
  /** Generations to keep (default 2); 0 keeps all. */
  keep?: number
  /** Switch CURRENT even when another writer moved it since our parent. */
  force?: boolean
  /** Write the generation beside CURRENT without switching it. */
  side?: boolean
  /** All or nothing: a segment that cannot be read fails the snapshot (no generation written). */
  strict?: boolean
  /** Why (recorded in the generation). */
  reason?: SnapshotReason
  /** Taken at a clean stop of the app (such a generation is never pruned while it is the newest clean one). */
  clean?: boolean
  /** Bytes per chunk (a multiple of the page size; default 4 MiB). */
  chunkSize?: number
  /**
   * Share the data file of a segment that did not change since the previous
   * generation (decided by a 128-bit hash per chunk) instead of writing it
   * again (default true).
   */
  incremental?: boolean
  /** Segments copied at once (default: the number of CPUs, at most 4). */
  concurrency?: number
  /** How long to wait for the state dir's lock (default: forever). */
  lockTimeoutMs?: number
  /**
   * Stop the app for a consistent image, called once the state dir's lock is
   * held (a checkpoint); afterCopy resumes it.
   */
  freeze?: () => Promise<{ ok: true } | { ok: false; reason: string }>
  /**
   * Called once every segment is copied (to the page cache), before any file
   * is fsynced: a checkpoint resumes the frozen app here.
   */
  afterCopy?: () => void
  /** Abandon the snapshot (no generation is written) when this aborts. */
  signal?: AbortSignal
  /** Processes other than shmkeep that were attached, when the caller knows them (recorded with their pids). */
  attachers?: Array<{ key: string; pid: number; command: string }>
  /**
   * The generation the live state descends from, when the caller knows it
   * (`run` restored it itself). Default: this namespace's lineage record
   * (src/state/lineage.ts); without one the lineage is unknown and the
   * generation goes beside CURRENT.
   */
  parent?: string | null
  /** Trust a state dir other users may write (default: SHMKEEP_INSECURE_STATE_DIR; src/state/trust.ts). */
  insecureStateDir?: boolean
  /** Segments on which shmkeep itself keeps one attachment (`run`'s pins): not counted as attachers. */
  pinnedIds?: ReadonlySet<number>
  log?: Logger
}

export type SegmentStatus = 'saved' | 'vanished' | 'unsaved'

/**
 * An object a snapshot could not save, whatever its kind: `kind`, `key`,
 * `id`, its permission block, `errno` and `reason`; a segment also has
 * `size`, `syscall` (when one failed) and `remedy` (docs/OPERATIONS.md).
 */
export type UnsavedEntry = (UnsavedRecord & { kind: 'shm' }) | UnsavedObject

export interface SegmentOutcome {
  key: string
  id: number
  size: number
  status: SegmentStatus
  /** Why it vanished or was not saved. */
  reason?: string
  /** For an unsaved segment: the errno name, and what would make it readable. */
  errno?: string
  remedy?: string
  /** Who it was read as, e.g. "uid 1000 gid 1000" (when shmkeep switched identity). */
  readAs?: string
  bytesWritten: number
  dataChunks: number
  zeroChunks: number
  /** Every chunk as in the previous generation: its data file is shared (hard link), nothing written. */
  unchanged?: boolean
  /** Bytes of the previous data file read to check it before it was shared (src/state/stamp.ts: a share, or all of it). */
  bytesChecked?: number
  durationMs: number
}

export interface SnapshotReport {
  stateDir: string
  /** The new generation's name, or null when none was written. */
  generation: string | null
  parent: string | null
  /** Whether CURRENT now names the new generation. */
  current: boolean
  /** False when an fsync after the CURRENT switch failed: CURRENT names it, but a crash may undo that. */
  durable: boolean
  side: boolean
  sideReason?: string
  /** saved, partial, side, undurable or failed (src/outcome.ts: the exit code of each). */
  outcome: SnapshotOutcome
  /** How the image was taken: stopped, frozen or live (may be torn across chunks). */
  consistency: Consistency
  segments: SegmentOutcome[]
  /** Semaphore sets and message queues (saved into the generation's packed data file, or not, and why). */
  objects: ObjectOutcome[]
  /**
   * Every object that could not be saved, of any kind, in one shape (report
   * version 2): segments as GENERATION's `unsaved` records them (with
   * `kind: 'shm'`), the other kinds as its `objects.unsaved` does.
   */
  unsaved: UnsavedEntry[]
  /** Segments that appeared while the snapshot ran (not in it). */
  appeared: Array<{ key: string; id: number; size: number }>
  bytes: number
  bytesWritten: number
  durationMs: number
  pruned: PruneResult
  /** Stale temporary files of a killed writer that were removed. */
  cleaned: string[]
}

/** The one log line of a snapshot: message and fields (`run` and shutdown steps); `saved` counts segments and other objects. */
export function describeSnapshot(r: SnapshotReport): { message: string; fields: Record<string, unknown>; saved: number } {
  const saved = r.segments.filter((s) => s.status === 'saved').length
  const objects = r.objects.filter((o) => o.status === 'saved').length
  const others = countObjects(r.objects, 'saved')
  const segmentsNotSaved = r.unsaved.filter((u) => u.kind === 'shm').length
  const notSaved = r.unsaved.length - segmentsNotSaved
  const notes = [
    r.current ? '' : 'beside CURRENT',
    segmentsNotSaved ? `${segmentsNotSaved} segment(s) NOT saved` : '',
    notSaved ? `${notSaved} other object(s) NOT saved` : '',
    r.consistency === 'live' ? 'live image: may be torn' : '',
    r.current && !r.durable ? 'durability unknown' : '',
  ].filter(Boolean)
  return {
    message: `snapshot ${r.generation}: ${saved} segment(s)${others ? `, ${others}` : ''}, ${humanSize(r.bytes)} in ${humanDuration(r.durationMs)}${notes.length ? ` (${notes.join('; ')})` : ''}`,
    fields: { generation: r.generation, segments: saved, objects, unsaved: r.unsaved.length, consistency: r.consistency, outcome: r.outcome, bytes: r.bytes, ms: Math.round(r.durationMs) },
    saved: saved + objects,
  }
}

/** A snapshot that failed (no generation switched to), or whose CURRENT switch is not known durable. */
export class SnapshotError extends Error {
  constructor(
    message: string,
    readonly report: SnapshotReport,
  ) {
    super(message)
  }
}

// ---------------------------------------------------------------------------
// One segment.

/** Chunks of a checkpoint to copy from the previous generation's file once the app runs again. */
interface Carry {
  from: string
  fd: number
  size: number
  chunkSize: number
  chunks: Buffer
  carried: Buffer
}

/** An unchanged segment's data file to share with the previous generation. */
interface Link {
  from: string
  file: string
  size: number
  chunkSize: number
  chunks: Buffer
  /** The previous generation's stamp of that file (any shape: it is checked). */
  stamp: unknown
}

/** A segment's copy in the previous generation, for an incremental save. */
interface Previous {
  meta: SegmentRecord
  dataPath: string
}

interface SegmentResult {
  outcome: SegmentOutcome
  /** The listing's IPC_STAT (before the copy). */
  seg: shm.ShmStat
  entry?: SegmentEntry
  unsaved?: UnsavedRecord
  carry?: Carry
  link?: Link
  /** A checkpoint's .meta, written once its data file is complete (its stamp is known then). */
  meta?: { file: string; record: SegmentRecord }
}

interface CopyContext {
  writer: GenerationWriter
  chunkSize: number
  /** A frozen app's checkpoint: write only changed chunks now, carry and link after the thaw. */
  checkpoint: boolean
  memory: ReturnType<typeof segmentMemory>
  /** How holes are told from data (src/residency.ts). */
  holes: Holes
  /** The abort signal as the workers' cancel token; it counts their bytes for the progress. */
  cancel: CancelToken | undefined
  powers: Powers
  /** pack.data once a small segment has data: its descriptor and where the next one goes. */
  pack?: { fd: number; end: number }
}

/**
 * Segments up to this size are packed into the generation's pack.data, their
 * records inside GENERATION (docs/FORMAT.md): thousands of small segments
 * cost one file and one fsync, not two each. They are read whole (at most 16
 * pages, so holes matter little) and written again at every snapshot (no
 * hashes, no links: a few KiB).
 */
export const PACK_MAX = 64 << 10

/**
 * Check the previous file before it is shared (never link damage into a new
 * generation): the sweep's share of its chunks when its stamp holds, all of
 * them otherwise (src/state/stamp.ts). ok false when a chunk fails its CRC or
 * the file cannot be read; the stamp to record in the new generation.
 */
async function checkPrevious(link: Link, cancel: CancelToken | undefined): Promise<{ ok: boolean; stamp?: FileStamp; bytesRead: number }> {
  let now: FileStamp
  try {
    now = stampOf(link.from)
  } catch {
    return { ok: false, bytesRead: 0 }
  }
  const plan = checkPlan(link.stamp, now, Math.ceil(link.size / link.chunkSize))
  const check = await native
    .verifyFile({ path: link.from, size: link.size, chunkSize: link.chunkSize, chunks: link.chunks, first: plan.first, count: plan.count, lanes: lanesFor(link.size, link.chunkSize), cancel })
    .catch((e: unknown) => {
      if (isCancelled(e)) throw e
      return { badChunks: [-1], bytesRead: 0 }
    })
  if (check.badChunks.length) return { ok: false, bytesRead: check.bytesRead }
  return { ok: true, stamp: { ...now, sweep: plan.next }, bytesRead: check.bytesRead }
}

function describeIdentity(who: Identity): string | undefined {
  if (who.uid < 0 && who.gid < 0) return undefined
  return `uid ${who.uid} gid ${who.gid}`
}

/** System calls on the segment itself (or the identity that reads it): their failure is about that segment only. */
const SEGMENT_SYSCALLS = new Set(['shmctl', 'shmat', 'shmdt', 'madvise', 'mincore', 'setresuid', 'setresgid', 'setgroups'])

/** What would let shmkeep read a segment it could not. */
function remedyFor(seg: shm.ShmStat): string {
  const key = formatKey(seg.key)
  const exclude = `or leave it out on purpose with --exclude-key ${key}`
  if ((seg.mode & 0o444) === 0) {
    return `mode ${seg.mode.toString(8).padStart(4, '0')} lets no one read it, its owner neither: run shmkeep with CAP_IPC_OWNER (--cap-add IPC_OWNER), ${exclude}`
  }
  return `run shmkeep with CAP_IPC_OWNER (--cap-add IPC_OWNER), or with CAP_SETUID/CAP_SETGID to read it as its owner, ${exclude}`
}

function segmentIdentity(seg: shm.ShmStat): SegmentIdentity {
  return { key: formatKey(seg.key), id: seg.id, size: seg.size, mode: seg.mode, uid: seg.uid, gid: seg.gid, cuid: seg.cuid, cgid: seg.cgid }
}

function unsavedRecord(seg: shm.ShmStat, errno: string, reason: string, syscall?: string): UnsavedRecord {
  return {
    ...segmentIdentity(seg),
    errno,
    ...(syscall ? { syscall } : {}),
    reason,
    remedy: remedyFor(seg),
  }
}

/**
 * A segment's failure, classified: removed meanwhile (EINVAL/EIDRM from
 * IPC_STAT or shmat: vanished, not a failure), unreadable (any other error
 * of a call on the segment: recorded, the others go on), or undefined — an
 * error of the disk, which fails the snapshot.
 */
function classifyFailure(e: unknown, seg: shm.ShmStat): { vanished: string } | { unsaved: UnsavedRecord } | undefined {
  const raw = e as { errno?: number; syscall?: string; message?: string }
  if (typeof raw.errno !== 'number' || !raw.syscall || !SEGMENT_SYSCALLS.has(raw.syscall)) return undefined
  const code = errnoName(raw.errno)
  if ((raw.syscall === 'shmctl' || raw.syscall === 'shmat') && (code === 'EINVAL' || code === 'EIDRM')) {
    return { vanished: `removed before it could be ${raw.syscall === 'shmat' ? 'attached' : 'read'} (${code} from ${raw.syscall})` }
  }
  return { unsaved: unsavedRecord(seg, code, `${raw.syscall}: ${code}${raw.message ? ` (${raw.message.replace(/^[^:]*: /, '')})` : ''}`, raw.syscall) }
}

/** Who may read `seg`, and how its outcome is told; a result at once when no identity may. */
function beginSegment(ctx: CopyContext, seg: shm.ShmStat): { result: SegmentResult } | { who: Identity; done: (status: SegmentStatus, extra: Partial<SegmentOutcome>) => SegmentOutcome; failed: (e: unknown) => SegmentResult } {
  const started = performance.now()
  const who = readIdentity(seg, ctx.powers)
  const base = { key: formatKey(seg.key), id: seg.id, size: seg.size, bytesWritten: 0, dataChunks: 0, zeroChunks: 0 }
  if ('error' in who) {
    const unsaved = unsavedRecord(seg, 'EACCES', who.error)
    return { result: { seg, unsaved, outcome: { ...base, status: 'unsaved', reason: who.error, errno: 'EACCES', remedy: unsaved.remedy, durationMs: 0 } } }
  }
  const done = (status: SegmentStatus, extra: Partial<SegmentOutcome>): SegmentOutcome => ({
    ...base,
    readAs: describeIdentity(who),
    status,
    ...extra,
    durationMs: performance.now() - started,
  })
  const failed = (e: unknown): SegmentResult => {
    const failure = classifyFailure(e, seg)
    if (!failure) throw systemError(e, `segment ${base.key}, id ${seg.id}`)
    if ('vanished' in failure) return { seg, outcome: done('vanished', { reason: failure.vanished }) }
    return { seg, unsaved: failure.unsaved, outcome: done('unsaved', { reason: failure.unsaved.reason, errno: failure.unsaved.errno, remedy: failure.unsaved.remedy }) }
  }
  return { who, done, failed }
}

/**
 * Save the small segments into pack.data, all in one native job (one trip to
 * the thread pool for thousands of segments): for each, one copy from the
 * attachment into a buffer of ours, whose bytes are both checksummed and
 * written; holes told from data as for any segment (src/residency.ts). A
 * segment's failure is its own (vanished, unsaved); the disk's fails all.
 */
async function savePacked(ctx: CopyContext, segs: shm.ShmStat[]): Promise<SegmentResult[]> {
  const out: SegmentResult[] = new Array(segs.length)
  const todo: Array<{ at: number; seg: shm.ShmStat; begun: Exclude<ReturnType<typeof beginSegment>, { result: SegmentResult }> }> = []
  segs.forEach((seg, at) => {
    const begun = beginSegment(ctx, seg)
    if ('result' in begun) out[at] = begun.result
    else todo.push({ at, seg, begun })
  })
  if (todo.length === 0) return out
  ctx.pack ??= { fd: ctx.writer.create(PACK_DATA), end: 0 }
  const pack = ctx.pack
  const raw = await native.savePacked({
    segments: todo.map(({ seg, begun }) => ({ id: seg.id, uid: begun.who.uid, gid: begun.who.gid, size: seg.size })),
    fd: pack.fd,
    offset: pack.end,
    chunkSize: ctx.chunkSize,
    holes: ctx.holes,
    cancel: ctx.cancel,
  })
  if (pack.end === 0 && raw.every((r) => 'errno' in r || r.dataChunks === 0)) {
    // Every packed segment is zero: no pack.data (restore opens none).
    ctx.writer.remove(PACK_DATA)
    ctx.pack = undefined
  }
  for (const [n, { at, seg, begun }] of todo.entries()) {
    const r = raw[n]!
    const { done, failed } = begun
    if ('errno' in r) {
      out[at] = failed(Object.assign(new Error(r.message), { errno: r.errno, syscall: r.syscall }))
      continue
    }
    if ((r.key >>> 0) !== seg.key || r.size !== seg.size) {
      out[at] = { seg, outcome: done('vanished', { reason: `id ${seg.id} now belongs to another segment (key ${formatKey(r.key)}, ${r.size} bytes)` }) }
      continue
    }
    if (r.dataChunks) pack.end = Math.max(pack.end, r.offset + Math.ceil(seg.size / 4096) * 4096)
    const chunkCount = Math.ceil(seg.size / ctx.chunkSize)
    const record: PackedRecord = {
      format: FORMAT,
      ...segmentIdentity(seg),
      pageSize: shm.pageSize,
      hugetlb: false,
      info: { cpid: seg.cpid, lpid: seg.lpid, nattch: seg.nattch, atime: seg.atime, dtime: seg.dtime, ctime: seg.ctime },
      chunkSize: ctx.chunkSize,
      chunkCount,
      dataChunks: r.dataChunks,
      zeroChunks: r.zeroChunks,
      chunks: r.chunks.toString('base64'),
      data: PACK_DATA,
      offset: r.offset,
    }
    out[at] = {
      seg,
      outcome: done('saved', { bytesWritten: r.bytesWritten, dataChunks: r.dataChunks, zeroChunks: r.zeroChunks }),
      entry: { key: record.key, id: seg.id, size: seg.size, meta: '', data: PACK_DATA, packed: record },
    }
  }
  return out
}

/** Save one segment's data and metadata into the generation. */
async function saveOne(ctx: CopyContext, seg: shm.ShmStat, previous: Previous | undefined): Promise<SegmentResult> {
  const key = formatKey(seg.key)
  const stem = segmentStem(seg.key, seg.id)
  const dataFile = `${stem}.data`
  const begun = beginSegment(ctx, seg)
  if ('result' in begun) return begun.result
  const { who, done, failed } = begun
  let size = ctx.chunkSize
  for (;;) {
    // The file stays open until the writer fsyncs it, through the same
    // descriptor (one opened later would not hear of a failed write-back).
    const fd = ctx.writer.create(dataFile)
    // The previous generation's copy of this segment, when its chunks line up.
    const prev = previous && previous.meta.size === seg.size && previous.meta.chunkSize === size && previous.meta.hashes ? previous : undefined
    let result
    try {
      result = await native.saveSegment({
        id: seg.id,
        uid: who.uid,
        gid: who.gid,
        path: ctx.writer.path(dataFile),
        chunkSize: size,
        holes: ctx.holes,
        fsync: false,
        // A full save goes straight to the disk; a frozen app's checkpoint
        // writes to the page cache (its pause is the copy).
        direct: !ctx.checkpoint,
        cancel: ctx.cancel,
        fd,
        previous: prev && { chunks: Buffer.from(prev.meta.chunks, 'base64'), hashes: Buffer.from(prev.meta.hashes!, 'base64') },
        // A frozen app's checkpoint: write only the changed chunks now, the
        // unchanged ones are copied from the previous file once it runs again.
        carryUnchanged: prev !== undefined && ctx.checkpoint,
        lanes: lanesFor(seg.size, size),
      })
    } catch (e) {
      ctx.writer.remove(dataFile)
      return failed(e)
    }
    const st = result.stat
    if ((st.key >>> 0) !== seg.key || st.id !== seg.id || st.size !== seg.size) {
      ctx.writer.remove(dataFile)
      return { seg, outcome: done('vanished', { reason: `id ${seg.id} now belongs to another segment (key ${formatKey(st.key)}, ${st.size} bytes)` }) }
    }
    // A hugetlb segment: chunks must be whole huge pages. Rare; redo with the page size.
    if (result.kernelPageSize > 0 && size % result.kernelPageSize !== 0) {
      ctx.writer.remove(dataFile)
      size = Math.ceil(size / result.kernelPageSize) * result.kernelPageSize
      continue
    }
    let link: Link | undefined
    // The data file as known good now: written from our checksummed buffers.
    let stamp: FileStamp | undefined
    let bytesChecked: number | undefined
    if (result.unchanged) {
      // Every chunk is as in the previous generation. Share its data file (a
      // hard link: nothing written; each generation stays complete and
      // independent of pruning) — once it is known good: linking a file
      // damaged on disk since would carry the damage into this generation
      // while the good bytes are still in memory (checkPrevious). A frozen
      // app's checkpoint does that after the thaw (finishCheckpoint), so the
      // pause stays one pass.
      ctx.writer.remove(dataFile)
      link = { from: prev!.dataPath, file: dataFile, size: seg.size, chunkSize: size, chunks: result.chunks, stamp: prev!.meta.file }
      if (!ctx.checkpoint) {
        const check = await checkPrevious(link, ctx.cancel)
        if (!check.ok) {
          previous = undefined
          continue // save it in full
        }
        ctx.writer.link(link.from, link.file)
        link = undefined
        stamp = check.stamp
        bytesChecked = check.bytesRead
      }
    } else if (result.carriedChunks === 0) {
      stamp = stampOf(fd)
    }
    const record: SegmentRecord = {
      format: FORMAT,
      ...segmentIdentity(seg),
      pageSize: result.kernelPageSize || shm.pageSize,
      hugetlb: result.kernelPageSize > shm.pageSize,
      info: { cpid: seg.cpid, lpid: seg.lpid, nattch: seg.nattch, atime: seg.atime, dtime: seg.dtime, ctime: seg.ctime },
      chunkSize: size,
      chunkCount: Math.ceil(seg.size / size),
      dataChunks: result.dataChunks,
      zeroChunks: result.zeroChunks,
      chunks: result.chunks.toString('base64'),
      hashes: result.hashes.toString('base64'),
      data: dataFile,
    }
    const carry =
      !result.unchanged && result.carriedChunks > 0 ? { from: prev!.dataPath, fd, size: seg.size, chunkSize: size, chunks: result.chunks, carried: result.carried } : undefined
    const meta = { file: `${stem}.meta`, record }
    // A checkpoint's link or carry completes its data file after the thaw: the .meta (with the stamp) then.
    if (!carry && !link) addMeta(ctx.writer, meta, stamp)
    return {
      seg,
      ...(carry ? { carry } : {}),
      ...(link ? { link } : {}),
      ...(carry || link ? { meta } : {}),
      outcome: done('saved', {
        unchanged: result.unchanged,
        ...(bytesChecked !== undefined ? { bytesChecked } : {}),
        bytesWritten: result.unchanged ? 0 : result.bytesWritten,
        dataChunks: result.dataChunks,
        zeroChunks: result.zeroChunks,
      }),
      entry: { key, id: seg.id, size: seg.size, meta: `${stem}.meta`, data: dataFile },
    }
  }
}

/** A segment's .meta, with the stamp of its data file when it is known good. */
function addMeta(writer: GenerationWriter, meta: { file: string; record: SegmentRecord }, stamp: FileStamp | undefined): void {
  writer.addFile(meta.file, encodeCheckedJson(FORMAT, stamp ? { ...meta.record, file: stamp } : meta.record))
}

/** After a checkpoint's thaw: link the unchanged files and copy the carried chunks (each checked against its CRC); then their .meta. */
async function finishCheckpoint(writer: GenerationWriter, results: SegmentResult[], cancel: CancelToken | undefined): Promise<void> {
  for (const r of results) {
    let stamp: FileStamp | undefined
    if (r.link) {
      const check = await checkPrevious(r.link, cancel)
      if (!check.ok) {
        throw new Error(`the previous generation's ${r.link.from} fails its checksums: this checkpoint is abandoned (the next one is written in full)`)
      }
      writer.link(r.link.from, r.link.file)
      stamp = check.stamp
      r.outcome.bytesChecked = check.bytesRead
    }
    if (r.carry) {
      const { bytesCopied } = await native.copyCarried({ ...r.carry, cancel }).catch((e: Error) => {
        if (isCancelled(e)) throw e
        throw new Error(`${e.message}: this checkpoint is abandoned (the next one is written in full)`)
      })
      r.outcome.bytesWritten += bytesCopied
      // Every chunk now in the file was checksummed as it was written (ours) or copied (checked against its CRC).
      stamp = stampOf(r.carry.fd)
    }
    if (r.meta) addMeta(writer, r.meta, stamp)
  }
}

// ---------------------------------------------------------------------------
// The generation as a whole.

/**
 * Run `fn` over `items` with at most `limit` at once, keeping order; stops
 * starting new ones once `signal` aborts or one fails. Throws the first
 * failure only once every call in flight has returned: no worker still
 * writes into a generation that is being abandoned.
 */
async function mapLimit<T, R>(items: T[], limit: number, signal: AbortSignal | undefined, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  let failure: { error: unknown } | undefined
  const worker = async () => {
    while (next < items.length && !failure) {
      if (signal?.aborted) {
        failure = { error: signal.reason }
        return
      }
      const i = next++
      try {
        out[i] = await fn(items[i]!)
      } catch (e) {
        failure ??= { error: e }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  if (failure) throw failure.error
  return out
}

/** GENERATION records read once per snapshot (with thousands of packed segments, one is large). */
function generationReader(state: StateDir): (name: string) => GenerationRecord {
  const seen = new Map<string, GenerationRecord>()
  return (name) => {
    let r = seen.get(name)
    if (!r) seen.set(name, (r = state.readGeneration(name)))
    return r
  }
}

/** The segments of the generation the live state descends from (or CURRENT), by key and id. */
function previousSegments(state: StateDir, read: (name: string) => GenerationRecord, names: Array<string | null>): Map<string, Previous> {
  const out = new Map<string, Previous>()
  for (const name of names) {
    if (!name) continue
    try {
      const gen = read(name)
      for (const entry of gen.segments) {
        if (entry.packed) continue // written again at every snapshot, never linked
        const meta = state.readSegment(name, entry)
        out.set(`${meta.key}-${meta.id}`, { meta, dataPath: state.path(name, meta.data) })
      }
      return out
    } catch {
      out.clear() // unreadable: try the next, or save everything in full
    }
  }
  return out
}

/** How many objects (segments and the other kinds) a generation holds (0 when unreadable). */
function generationSegmentCount(read: (name: string) => GenerationRecord, name: string | null): number {
  if (!name) return 0
  try {
    const g = read(name)
    return g.segments.length + (g.objects?.records.length ?? 0)
  } catch {
    return 0
  }
}

/**
 * Look at the saved segments again once they are copied. A segment removed
 * meanwhile (gone, or SHM_DEST: the kernel then gives its key to nobody, and
 * the key may already name a new segment) is dropped as vanished: once
 * attached, a removed segment stays readable, so the copy alone does not
 * tell. Then no key may appear twice (a listing is not one instant): the
 * newest segment of a key is kept. Returns the stat after the copy by id.
 */
export function dropVanished<R extends { outcome: { status: SegmentStatus; key: string; id: number; reason?: string }; seg: { key: number; size: number; ctime: number } }>(
  results: R[],
  after: ReadonlyArray<{ id: number; key: number; size: number; dest: boolean }>,
): void {
  const now = new Map(after.map((s) => [s.id, s]))
  for (const r of results) {
    if (r.outcome.status !== 'saved') continue
    const s = now.get(r.outcome.id)
    if (!s) drop(r, 'removed during the snapshot')
    else if (s.dest) drop(r, 'removed (IPC_RMID) during the snapshot')
    else if ((s.key >>> 0) !== (r.seg.key >>> 0) || s.size !== r.seg.size) drop(r, `id ${r.outcome.id} now belongs to another segment`)
  }
  const byKey = new Map<number, R>()
  for (const r of results) {
    if (r.outcome.status !== 'saved' || r.seg.key === 0) continue
    const other = byKey.get(r.seg.key)
    if (!other) {
      byKey.set(r.seg.key, r)
      continue
    }
    const [older, newer] = other.seg.ctime < r.seg.ctime || (other.seg.ctime === r.seg.ctime && other.outcome.id < r.outcome.id) ? [other, r] : [r, other]
    drop(older, `key ${r.outcome.key} names a newer segment (id ${newer.outcome.id})`)
    byKey.set(r.seg.key, newer)
  }
  function drop(r: R, reason: string) {
    r.outcome.status = 'vanished'
    r.outcome.reason = reason
  }
}

/**
 * How the image was taken: frozen when the app was frozen for the copy;
 * stopped when no saved segment had an attacher other than shmkeep's own
 * pins, before the copy or after it; live otherwise.
 */
export function decideConsistency(i: {
  frozen: boolean
  knownAttachers: number
  segments: ReadonlyArray<{ id: number; nattchBefore: number; nattchAfter: number | undefined }>
  pinned: ReadonlySet<number>
}): Consistency {
  if (i.frozen) return 'frozen'
  if (i.knownAttachers > 0) return 'live'
  const others = (n: number, id: number) => n - (i.pinned.has(id) ? 1 : 0)
  return i.segments.some((s) => others(s.nattchBefore, s.id) > 0 || others(s.nattchAfter ?? 0, s.id) > 0) ? 'live' : 'stopped'
}

function emptyReport(stateDir: string): SnapshotReport {
  return {
    stateDir: path.resolve(stateDir),
    generation: null,
    parent: null,
    current: false,
    durable: true,
    side: false,
    outcome: 'failed',
    consistency: 'stopped',
    segments: [],
    objects: [],
    unsaved: [],
    appeared: [],
    bytes: 0,
    bytesWritten: 0,
    durationMs: 0,
    pruned: { removed: [], kept: [] },
    cleaned: [],
  }
}

/**
 * Save every segment (that the filter takes) into a new generation and make
 * it CURRENT. Segments that cannot be read are recorded in the generation as
 * unsaved (report.outcome 'partial'), unless `strict`. Throws
 * {@link SnapshotError} (with the report) when nothing was switched to — or
 * when CURRENT was switched but an fsync after it failed (outcome
 * 'undurable').
 */
export async function snapshot(options: SnapshotOptions): Promise<SnapshotReport> {
  checkEntryOptions('snapshot', options)
  const log = options.log ?? silentLogger
  const started = performance.now()
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
  if (!Number.isInteger(chunkSize) || chunkSize <= 0 || chunkSize % shm.pageSize !== 0) {
    throw new RangeError(`chunkSize must be a positive multiple of the page size (${shm.pageSize})`)
  }
  const keep = options.keep ?? 2
  const take = segmentPredicate(options.filter)
  const report = emptyReport(options.stateDir)
  let writer: GenerationWriter | undefined
  let lock: FileLock | undefined
  try {
    // 1. The state dir, locked (inside the try: a state dir that cannot be
    // made or locked — read-only, full — is a failed snapshot like any other).
    const state = StateDir.open(options.stateDir, { create: true, log, insecure: options.insecureStateDir })
    lock = await state.lock({ timeoutMs: options.lockTimeoutMs, signal: options.signal })
    report.cleaned = state.removeStaleTemporaries()
    if (report.cleaned.length) log.log('info', 'state.cleaned', `removed what a killed writer left: ${report.cleaned.join(', ')}`)

    // 2. Freeze only once the lock is ours: a frozen app must never wait on
    // another writer (who might even be one of the processes we stopped).
    if (options.freeze) {
      const f = await options.freeze()
      if (!f.ok) throw new SnapshotError(`checkpoint skipped, nothing frozen: ${f.reason}`, report)
      options.signal?.throwIfAborted()
    }

    // 3. What to save, and what it descends from.
    const scan = shm.scan()
    if (!scan.complete) log.log('warn', 'snapshot.incomplete-list', 'this kernel has no SHM_STAT_ANY (Linux < 4.17): segments shmkeep may not read are not listed')
    const listed = scan.segments.filter((s) => !s.dest && take(s)).sort((a, b) => a.id - b.id)
    const lineage: Lineage = options.parent !== undefined ? { known: true, record: { id: -1, key: 0, token: '', generation: options.parent } } : readLineage(state)
    report.parent = lineage.known ? lineage.record.generation : null
    const current = state.readCurrent()
    const currentName = 'name' in current ? current.name : null
    const read = generationReader(state)
    const previous = options.incremental === false ? new Map<string, Previous>() : previousSegments(state, read, [report.parent, currentName])

    // 4. Copy every segment into the new generation.
    writer = GenerationWriter.begin(state)
    // How holes are told from data: the image is quiet when the app is frozen or nothing else is attached.
    const holes = holesHere(options.freeze !== undefined || options.attachers?.length === 0)
    if (!holes.keepsHoles) log.log('warn', 'snapshot.holes', `holes cannot be kept: ${holes.reason}`)
    const progress = startProgress(log, options.reason === 'checkpoint' ? 'checkpoint' : 'snapshot', listed.reduce((n, s) => n + s.size, 0))
    const ctx: CopyContext = {
      writer,
      chunkSize,
      checkpoint: options.afterCopy !== undefined,
      memory: segmentMemory(),
      holes: holes.holes,
      cancel: cancelTokenFor(options.signal, progress),
      powers: currentPowers(),
    }
    const copyStarted = performance.now()
    // A small segment goes into pack.data — unless it is a huge page one
    // (its rss is whole huge pages): that keeps its own file and record.
    const isSmall = (seg: shm.ShmStat) => seg.size <= PACK_MAX && (ctx.memory.get(seg.id)?.rss ?? 0) <= Math.ceil(seg.size / shm.pageSize) * shm.pageSize
    const small = listed.filter(isSmall)
    const packed = savePacked(ctx, small).then((r) => (progress.advance(small.reduce((n, s) => n + s.size, 0)), r))
    const large = mapLimit(
      listed.filter((s) => !isSmall(s)),
      options.concurrency ?? Math.min(4, os.availableParallelism()),
      options.signal,
      async (seg) => {
        const r = await saveOne(ctx, seg, previous.get(`${formatKey(seg.key)}-${seg.id}`))
        // Many files open: fsync some early (a checkpoint still needs its
        // descriptors for the chunks it carries after the thaw).
        if (!ctx.checkpoint) await writer!.relieve()
        progress.advance(seg.size)
        return r
      },
    )
    // Both settle before either's failure is thrown: no worker still writes into an abandoned generation.
    const [packedResults, largeResults] = await Promise.allSettled([packed, large]).finally(() => progress.end())
    if (packedResults.status === 'rejected') throw packedResults.reason
    if (largeResults.status === 'rejected') throw largeResults.reason
    const byId = new Map([...packedResults.value, ...largeResults.value].map((r) => [r.seg.id, r]))
    const results = listed.map((s) => byId.get(s.id)!)
    const copyMs = performance.now() - copyStarted
    // Semaphore sets and message queues: small, read while a frozen app is still frozen.
    const objects = saveObjects(writer, { filter: options.filter, checkpoint: options.reason === 'checkpoint', final: options.reason === 'stop' || options.reason === 'exit', powers: ctx.powers, log })
    report.objects = objects.outcomes
    if (options.afterCopy) {
      // With afterCopy (a checkpoint of a frozen app), what is left to do
      // with the files happens after the app is resumed: the freeze lasts
      // only as long as the copy.
      options.afterCopy()
      options.signal?.throwIfAborted()
      await finishCheckpoint(writer, results, ctx.cancel)
    }
    options.signal?.throwIfAborted()

    // 5. Look again: segments removed meanwhile are dropped, not saved.
    const after = shm.scan().segments
    dropVanished(results, after)
    report.segments = results.map((r) => r.outcome)
    const unsavedSegments = results.flatMap((r) => (r.unsaved ? [r.unsaved] : []))
    for (const r of results) {
      const o = r.outcome
      if (o.status === 'vanished') {
        log.log('info', 'snapshot.vanished', `segment ${o.key} (id ${o.id}) vanished during the snapshot: ${o.reason}`, { key: o.key, id: o.id })
        if (r.entry && !r.entry.packed) {
          writer.remove(r.entry.meta)
          writer.remove(r.entry.data)
        }
      }
      if (o.status === 'unsaved') log.log('error', 'snapshot.unsaved', `segment ${o.key} (id ${o.id}) NOT saved: ${o.reason}; ${o.remedy}`, { key: o.key, id: o.id, errno: o.errno })
    }
    // Unsaved semaphore sets and queues count as unsaved segments do (partial; --strict fails).
    report.unsaved = [...unsavedSegments.map((u) => ({ kind: 'shm' as const, ...u })), ...(objects.section?.unsaved ?? [])]
    if (report.unsaved.length && options.strict) {
      const all = report.unsaved.map((u) => `${u.kind === 'shm' ? '' : `${u.kind} `}${u.key} (id ${u.id}): ${u.reason}`)
      throw new SnapshotError(`snapshot failed, no generation written (CURRENT unchanged): --strict, and ${all.length} object(s) could not be saved: ${all.join('; ')}`, report)
    }
    const saved = results.filter((r) => r.outcome.status === 'saved')
    const entries = saved.map((r) => r.entry!)
    report.bytes = entries.reduce((n, e) => n + e.size, 0)
    report.bytesWritten = report.segments.reduce((n, o) => n + o.bytesWritten, 0)
    const afterById = new Map(after.map((s) => [s.id, s]))
    report.consistency = decideConsistency({
      frozen: options.freeze !== undefined,
      knownAttachers: options.attachers?.length ?? 0,
      segments: saved.map((r) => ({ id: r.seg.id, nattchBefore: r.seg.nattch, nattchAfter: afterById.get(r.seg.id)?.nattch })),
      pinned: options.pinnedIds ?? new Set(),
    })

    // 6. Whether CURRENT may move to it.
    const side = decideSide({
      asked: options.side ?? false,
      force: options.force ?? false,
      current,
      currentSegments: generationSegmentCount(read, currentName),
      parent: report.parent,
      lineage: lineage.known ? { known: true } : { known: false, why: lineage.why },
    })
    report.side = side.side
    if (side.side) report.sideReason = side.reason

    // 7. Commit, then switch CURRENT.
    const record: GenerationRecord = {
      format: FORMAT,
      tool: 'shmkeep',
      toolVersion: version,
      name: writer.name,
      seq: writer.seq,
      parent: report.parent,
      createdAt: new Date().toISOString(),
      hostname: os.hostname(),
      kernel: `${os.type()} ${os.release()} ${os.arch()}`,
      reason: options.reason ?? 'manual',
      clean: options.clean ?? false,
      side: report.side,
      ...(report.sideReason ? { sideReason: report.sideReason } : {}),
      consistency: report.consistency,
      ...(options.attachers?.length ? { attachers: options.attachers } : {}),
      ...(unsavedSegments.length ? { unsaved: unsavedSegments } : {}),
      bytes: report.bytes,
      bytesWritten: report.bytesWritten,
      durationMs: { total: Math.round(performance.now() - started), copy: Math.round(copyMs) },
      segments: entries,
      ...(objects.section ? { objects: objects.section } : {}),
    }
    options.signal?.throwIfAborted()
    // Abandonable until the rename: a TERM while the files are written back
    // drops their pages and returns at once (src/state/writer.ts).
    await writer.commit(record, options.signal)
    report.generation = writer.name
    if (report.side) {
      log.log('error', 'snapshot.side', `generation ${writer.name} written BESIDE CURRENT, which still names ${currentName ?? '(unreadable)'}: ${report.sideReason}. To make it CURRENT: shmkeep adopt --state-dir ${state.dir} ${writer.name} (or snapshot with --force)`, { generation: writer.name })
    } else {
      writer.switchCurrent()
      report.current = true
    }
    report.outcome = snapshotOutcome(report)

    // 8. The snapshot is done. What follows is bookkeeping: a failure there
    // is a warning, never "no generation written".
    try {
      // The lineage follows CURRENT: the next snapshot of this namespace continues from it.
      if (report.current) writeLineage(state, writer.name)
      const seen = new Set(scan.segments.map((s) => s.id))
      report.appeared = after.filter((s) => !seen.has(s.id) && !s.dest && take(s)).map((s) => ({ key: formatKey(s.key), id: s.id, size: s.size }))
      for (const a of report.appeared) log.log('warn', 'snapshot.appeared', `segment ${a.key} (id ${a.id}) appeared during the snapshot and is not in it`, a)
      report.pruned = prune(state, { keep, protect: [report.parent], log })
      // The independent fallback copy is not made here: `run`'s checkpointer
      // makes it after the checkpoint (src/state/fallback.ts keepFallback).
    } catch (e) {
      log.log('warn', 'snapshot.after', `generation ${writer.name} is complete${report.current ? ' and CURRENT' : ''}, but what follows failed: ${e instanceof Error ? e.message : String(e)}`)
    }
    report.durationMs = performance.now() - started
    return report
  } catch (e) {
    report.durationMs = performance.now() - started
    if (e instanceof SnapshotError) throw e
    const why = e instanceof Error ? e.message : String(e)
    if (writer?.state === 'switching') {
      // CURRENT.tmp was renamed over CURRENT but the state dir's fsync failed
      // (or something between): CURRENT may name the new generation, and
      // whether that survives a crash is unknown. Say exactly that.
      const stateNow = StateDir.open(options.stateDir)
      const now = stateNow.readCurrent()
      const named = 'name' in now && now.name === writer.name
      if (named) {
        // The lineage follows CURRENT, durable or not: the next snapshot of
        // this namespace must continue from what CURRENT names.
        try {
          writeLineage(stateNow, writer.name)
        } catch (err) {
          log.log('warn', 'snapshot.lineage', `the lineage of this namespace could not be recorded: ${(err as Error).message}`)
        }
      }
      report.generation = writer.name
      report.current = named
      report.durable = false
      report.outcome = snapshotOutcome(report)
      throw new SnapshotError(
        `snapshot ${writer.name} is complete, but switching CURRENT to it failed: ${why}; ` + (named ? 'CURRENT names it, but it may not be durable yet' : 'CURRENT still names the previous generation'),
        report,
      )
    }
    if (writer?.state === 'renamed') {
      throw new SnapshotError(`snapshot ${writer.name} was renamed into place, but making that durable failed: ${why}; CURRENT still names the previous generation`, report)
    }
    // Aborted: whatever the workers said as they stopped (ECANCELED), the snapshot was abandoned.
    if (options.signal?.aborted) throw new SnapshotError('snapshot abandoned (no generation written, CURRENT unchanged)', report)
    const disk = hasCode(e, 'ENOSPC', 'EIO', 'EDQUOT') || ['ENOSPC', 'EIO', 'EDQUOT'].includes((e as { code?: string }).code ?? '')
    throw new SnapshotError(`snapshot failed, no generation written (CURRENT unchanged): ${why}${disk ? ' (the disk refused the write; the previous generation is intact)' : ''}`, report)
  } finally {
    try {
      writer?.abandon()
    } finally {
      lock?.release()
    }
  }
}
