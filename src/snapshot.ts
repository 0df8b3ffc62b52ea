/**
 * Snapshot: save every SysV segment of this IPC namespace into a new
 * generation of the state dir, durably, then switch CURRENT to it.
 *
 * Order of durability (docs/FORMAT.md): each file is written and fsynced; the
 * generation's directory is fsynced; it is renamed into place; the state dir
 * is fsynced; CURRENT.tmp is written, fsynced, renamed to CURRENT; the state
 * dir is fsynced again. Any error abandons the generation: no fsync is ever
 * retried (after a failed fsync the page cache may have dropped the data).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { hasCode, systemError } from './errors'
import { segmentPredicate, type SegmentFilter } from './filter'
import { currentPowers, readIdentity, type Identity } from './identity'
import { formatKey } from './keys'
import type { FileLock } from './lock'
import { silentLogger, type Logger } from './log'
import { native } from './native'
import * as shm from './shm'
import { fsyncDir, encodeCheckedJson, makePrivateDir, openNewFile, writeNewFile } from './state/files'
import {
  FORMAT,
  GENERATION_FILE,
  generationName,
  segmentStem,
  TMP_PREFIX,
  type GenerationRecord,
  type SegmentEntry,
  type SegmentRecord,
  type SnapshotReason,
} from './state/format'
import { prune, type PruneResult } from './state/prune'
import { StateDir } from './state/statedir'
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
  /** Processes other than shmkeep that were attached (marks the generation inconsistent). */
  attachers?: Array<{ key: string; pid: number; command: string }>
  log?: Logger
}

export type SegmentStatus = 'saved' | 'vanished' | 'failed'

export interface SegmentOutcome {
  key: string
  id: number
  size: number
  status: SegmentStatus
  /** Why it vanished or failed. */
  reason?: string
  /** Who it was read as, e.g. "uid 1000 gid 1000" (when shmkeep switched identity). */
  readAs?: string
  bytesWritten: number
  dataChunks: number
  zeroChunks: number
  /** Every chunk as in the previous generation: its data file is shared (hard link), nothing written. */
  unchanged?: boolean
  durationMs: number
}

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
  to: string
  size: number
  chunkSize: number
  chunks: Buffer
}

/** Verify the previous file against its CRCs, then hard-link it; false when it is damaged. */
async function linkUnchanged(link: Link): Promise<boolean> {
  const check = await native
    .verifyFile({ path: link.from, size: link.size, chunkSize: link.chunkSize, chunks: link.chunks })
    .catch(() => ({ badChunks: [-1] }))
  if (check.badChunks.length) return false
  fs.linkSync(link.from, link.to)
  return true
}

/** A segment's copy in the previous generation, for an incremental save. */
interface Previous {
  meta: SegmentRecord
  dataPath: string
}

/** How many segments a generation holds (0 when unreadable). */
function generationSegmentCount(state: StateDir, name: string): number {
  try {
    return state.readGeneration(name).segments.length
  } catch {
    return 0
  }
}

/** The segments of the generation the live state descends from (or CURRENT), by key and id. */
function previousSegments(state: StateDir, names: Array<string | null>): Map<string, Previous> {
  const out = new Map<string, Previous>()
  for (const name of names) {
    if (!name) continue
    try {
      const gen = state.readGeneration(name)
      for (const entry of gen.segments) {
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

export interface SnapshotReport {
  stateDir: string
  /** The new generation's name, or null when none was written. */
  generation: string | null
  parent: string | null
  /** Whether CURRENT now names the new generation. */
  current: boolean
  side: boolean
  sideReason?: string
  segments: SegmentOutcome[]
  /** Segments that appeared while the snapshot ran (not in it). */
  appeared: Array<{ key: string; id: number; size: number }>
  bytes: number
  bytesWritten: number
  durationMs: number
  pruned: PruneResult
  /** Stale temporary files of a killed writer that were removed. */
  cleaned: string[]
}

/** The one log line of a snapshot: message and fields (`run` and shutdown steps). */
export function describeSnapshot(r: SnapshotReport): { message: string; fields: Record<string, unknown>; saved: number } {
  const saved = r.segments.filter((s) => s.status === 'saved').length
  return {
    message: `snapshot ${r.generation}: ${saved} segment(s), ${r.bytes} bytes in ${Math.round(r.durationMs)} ms${r.current ? '' : ' (beside CURRENT)'}`,
    fields: { generation: r.generation, segments: saved, bytes: r.bytes, ms: Math.round(r.durationMs) },
    saved,
  }
}

/** A snapshot that wrote no generation (some segment could not be saved, or an I/O error). */
export class SnapshotError extends Error {
  constructor(
    message: string,
    readonly report: SnapshotReport,
  ) {
    super(message)
  }
}

function describeIdentity(who: Identity): string | undefined {
  if (who.uid < 0 && who.gid < 0) return undefined
  return `uid ${who.uid} gid ${who.gid}`
}

/** Run `fn` over `items` with at most `limit` at once, keeping order of results. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i]!)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/** Save one segment's data and metadata into `dir`. */
async function saveOne(
  dir: string,
  seg: shm.ShmStat,
  who: Identity,
  chunkSize: number,
  skipAbsent: boolean,
  fsync: boolean,
  pending: number[],
  previous: Previous | undefined,
): Promise<{ outcome: SegmentOutcome; entry?: SegmentEntry; carry?: Carry; link?: Link }> {
  const key = formatKey(seg.key)
  const stem = segmentStem(seg.key, seg.id)
  const base = { key, id: seg.id, size: seg.size, readAs: describeIdentity(who), bytesWritten: 0, dataChunks: 0, zeroChunks: 0 }
  const started = performance.now()
  const dataPath = `${dir}/${stem}.data`
  let size = chunkSize
  for (;;) {
    let result
    // Deferred fsync: the file stays open until it is fsynced, through the
    // same descriptor (one opened later would not hear of a failed write-back).
    const fd = fsync ? undefined : openNewFile(dataPath)
    if (fd !== undefined) pending.push(fd)
    // The previous generation's copy of this segment, when its chunks line up.
    const prev = previous && previous.meta.size === seg.size && previous.meta.chunkSize === size && previous.meta.hashes ? previous : undefined
    try {
      result = await native.saveSegment({
        id: seg.id,
        uid: who.uid,
        gid: who.gid,
        path: dataPath,
        chunkSize: size,
        skipAbsent,
        fsync,
        fd,
        previous: prev && { chunks: Buffer.from(prev.meta.chunks, 'base64'), hashes: Buffer.from(prev.meta.hashes!, 'base64') },
        // A frozen app's checkpoint: write only the changed chunks now, the
        // unchanged ones are copied from the previous file once it runs again.
        carryUnchanged: prev !== undefined && fd !== undefined,
      })
    } catch (e) {
      fs.rmSync(dataPath, { force: true })
      const raw = e as { errno?: number; syscall?: string; message: string }
      // Removed between listing and attaching: not a failure of the snapshot.
      if (raw.syscall === 'shmat' && (raw.errno === os.constants.errno.EIDRM || raw.errno === os.constants.errno.EINVAL)) {
        return { outcome: { ...base, status: 'vanished', reason: 'removed before it could be attached', durationMs: performance.now() - started } }
      }
      throw systemError(e, `segment ${key}, id ${seg.id}`)
    }
    // mincore() cannot tell a never-touched page from one swapped out: the
    // segment had no swapped pages when we decided to skip absent ones; if it
    // has some now, what looked absent may be data. Save it again, reading all.
    if (skipAbsent && result.absentChunks + result.zeroChunks > 0 && (segmentMemory().get(seg.id)?.swap ?? 0) > 0) {
      if (fd !== undefined) {
        pending.splice(pending.indexOf(fd), 1)
        fs.closeSync(fd)
      }
      fs.rmSync(dataPath, { force: true })
      skipAbsent = false
      continue
    }
    const st = result.stat
    if ((st.key >>> 0) !== seg.key || st.id !== seg.id || st.size !== seg.size) {
      fs.rmSync(dataPath, { force: true })
      return {
        outcome: {
          ...base,
          status: 'vanished',
          reason: `id ${seg.id} now belongs to another segment (key ${formatKey(st.key)}, ${st.size} bytes)`,
          durationMs: performance.now() - started,
        },
      }
    }
    // A hugetlb segment: chunks must be whole huge pages. Rare; redo with the page size.
    if (result.kernelPageSize > 0 && size % result.kernelPageSize !== 0) {
      fs.rmSync(dataPath, { force: true })
      size = Math.ceil(size / result.kernelPageSize) * result.kernelPageSize
      continue
    }
    let link: Link | undefined
    if (result.unchanged) {
      // Every chunk is as in the previous generation. Share its data file (a
      // hard link: nothing written; each generation stays complete and
      // independent of pruning) — once it verifies: linking a file damaged
      // on disk since would carry the damage into this generation while the
      // good bytes are still in memory. A frozen app's checkpoint does that
      // after the thaw (linkUnchanged), so the pause stays one pass.
      if (fd !== undefined) {
        pending.splice(pending.indexOf(fd), 1)
        fs.closeSync(fd)
      }
      fs.rmSync(dataPath, { force: true })
      link = { from: prev!.dataPath, to: dataPath, size: seg.size, chunkSize: size, chunks: result.chunks }
      if (fsync) {
        if (!(await linkUnchanged(link))) {
          previous = undefined
          continue // save it in full
        }
        link = undefined
      }
    }
    const record: SegmentRecord = {
      format: FORMAT,
      key,
      id: seg.id,
      size: seg.size,
      mode: seg.mode,
      uid: seg.uid,
      gid: seg.gid,
      cuid: seg.cuid,
      cgid: seg.cgid,
      pageSize: result.kernelPageSize || shm.pageSize,
      hugetlb: result.kernelPageSize > shm.pageSize,
      info: { cpid: seg.cpid, lpid: seg.lpid, nattch: seg.nattch, atime: seg.atime, dtime: seg.dtime, ctime: seg.ctime },
      chunkSize: size,
      chunkCount: Math.ceil(seg.size / size),
      dataChunks: result.dataChunks,
      zeroChunks: result.zeroChunks,
      chunks: result.chunks.toString('base64'),
      hashes: result.hashes.toString('base64'),
      data: `${stem}.data`,
    }
    if (fsync) {
      writeNewFile(`${dir}/${stem}.meta`, encodeCheckedJson(FORMAT, record))
    } else {
      const metaFd = openNewFile(`${dir}/${stem}.meta`)
      pending.push(metaFd)
      fs.writeFileSync(metaFd, encodeCheckedJson(FORMAT, record))
    }
    const carry =
      !result.unchanged && result.carriedChunks > 0 && fd !== undefined
        ? { from: prev!.dataPath, fd, size: seg.size, chunkSize: size, chunks: result.chunks, carried: result.carried }
        : undefined
    return {
      ...(carry ? { carry } : {}),
      ...(link ? { link } : {}),
      outcome: {
        ...base,
        status: 'saved',
        unchanged: result.unchanged,
        bytesWritten: result.unchanged ? 0 : result.bytesWritten,
        dataChunks: result.dataChunks,
        zeroChunks: result.zeroChunks,
        durationMs: performance.now() - started,
      },
      entry: { key, id: seg.id, size: seg.size, meta: `${stem}.meta`, data: `${stem}.data` },
    }
  }
}

/**
 * Save every segment (that the filter takes) into a new generation and make
 * it CURRENT. Throws {@link SnapshotError} (with the report) when any segment
 * could not be saved: then no generation is written and CURRENT is untouched.
 */
export async function snapshot(options: SnapshotOptions): Promise<SnapshotReport> {
  const log = options.log ?? silentLogger
  const started = performance.now()
  const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
  if (!Number.isInteger(chunkSize) || chunkSize <= 0 || chunkSize % shm.pageSize !== 0) {
    throw new RangeError(`chunkSize must be a positive multiple of the page size (${shm.pageSize})`)
  }
  const keep = options.keep ?? 2
  const take = segmentPredicate(options.filter)
  const report: SnapshotReport = {
    stateDir: path.resolve(options.stateDir),
    generation: null,
    parent: null,
    current: false,
    side: false,
    segments: [],
    appeared: [],
    bytes: 0,
    bytesWritten: 0,
    durationMs: 0,
    pruned: { removed: [], kept: [] },
    cleaned: [],
  }
  let tmp: string | undefined
  let switching: string | undefined
  let lock: FileLock | undefined
  const pendingFds: number[] = []
  try {
    // Inside the try: a state dir that cannot be made or locked (read-only,
    // full) is a failed snapshot like any other.
    const state = StateDir.open(options.stateDir, { create: true })
    lock = await state.lock({ timeoutMs: options.lockTimeoutMs, signal: options.signal })
    report.cleaned = state.removeStaleTemporaries()
    if (report.cleaned.length) log.log('info', 'state.cleaned', `removed what a killed writer left: ${report.cleaned.join(', ')}`)
    // Freeze only once the lock is ours: a frozen app must never wait on
    // another writer (who might even be one of the processes we stopped).
    if (options.freeze) {
      const f = await options.freeze()
      if (!f.ok) throw new SnapshotError(`checkpoint skipped, nothing frozen: ${f.reason}`, report)
      options.signal?.throwIfAborted()
    }

    const scan = shm.scan()
    if (!scan.complete) log.log('warn', 'snapshot.incomplete-list', 'this kernel has no SHM_STAT_ANY (Linux < 4.17): segments shmkeep may not read are not listed')
    const listed = scan.segments.filter((s) => !s.dest && take(s)).sort((a, b) => a.id - b.id)
    const memory = segmentMemory()
    const powers = currentPowers()

    const ns = ipcNamespaceId()
    report.parent = state.liveParent(ns, scan.segments)
    const current = state.readCurrent()
    const previous = options.incremental === false ? new Map<string, Previous>() : previousSegments(state, [report.parent, 'name' in current ? current.name : null])
    const seq = state.nextSeq()
    const name = generationName(seq)
    tmp = state.path(TMP_PREFIX + name)
    makePrivateDir(tmp)

    // With afterCopy (a checkpoint of a frozen app), files are fsynced after
    // the app is resumed: the freeze lasts only as long as the copy.
    const deferSync = options.afterCopy !== undefined
    const pending = pendingFds
    const copyStarted = performance.now()
    const failures: string[] = []
    const results = await mapLimit(listed, options.concurrency ?? Math.min(4, os.availableParallelism()), async (seg) => {
      const who = readIdentity(seg, powers)
      if ('error' in who) {
        failures.push(`${formatKey(seg.key)} (id ${seg.id}): ${who.error}`)
        return { outcome: { key: formatKey(seg.key), id: seg.id, size: seg.size, status: 'failed' as const, reason: who.error, bytesWritten: 0, dataChunks: 0, zeroChunks: 0, durationMs: 0 } }
      }
      // mincore() tells never-touched pages from written ones only while
      // nothing is swapped out: a swapped page is "absent" too, but has data.
      const skipAbsent = (memory.get(seg.id)?.swap ?? 1) === 0
      try {
        return await saveOne(tmp!, seg, who, chunkSize, skipAbsent, !deferSync, pending, previous.get(`${formatKey(seg.key)}-${seg.id}`))
      } catch (e) {
        const reason = e instanceof Error ? e.message : String(e)
        failures.push(reason)
        return { outcome: { key: formatKey(seg.key), id: seg.id, size: seg.size, status: 'failed' as const, reason, bytesWritten: 0, dataChunks: 0, zeroChunks: 0, durationMs: 0 } }
      }
    })
    const copyMs = performance.now() - copyStarted
    if (options.afterCopy) {
      options.afterCopy()
      options.signal?.throwIfAborted()
      for (const r of results) {
        if (r.link && !(await linkUnchanged(r.link))) {
          throw new Error(`the previous generation's ${r.link.from} fails its checksums: this checkpoint is abandoned (the next one is written in full)`)
        }
        if (!r.carry) continue
        const { bytesCopied } = await native.copyCarried(r.carry).catch((e: Error) => {
          throw new Error(`${e.message}: this checkpoint is abandoned (the next one is written in full)`)
        })
        r.outcome.bytesWritten += bytesCopied
      }
      // Not retried: an fsync error abandons the generation (the catch below).
      while (pending.length) {
        const fd = pending.shift()!
        try {
          fs.fsyncSync(fd)
        } finally {
          fs.closeSync(fd)
        }
      }
    }
    options.signal?.throwIfAborted()
    report.segments = results.map((r) => r.outcome)
    for (const o of report.segments) {
      if (o.status === 'vanished') log.log('info', 'snapshot.vanished', `segment ${o.key} (id ${o.id}) vanished during the snapshot: ${o.reason}`, { key: o.key, id: o.id })
      if (o.status === 'failed') log.log('error', 'snapshot.failed-segment', `segment ${o.key} (id ${o.id}) could not be saved: ${o.reason}`, { key: o.key, id: o.id })
    }
    if (failures.length) {
      throw new SnapshotError(`snapshot failed, no generation written (CURRENT unchanged): ${failures.join('; ')}`, report)
    }
    const entries = results.flatMap((r) => (r.entry ? [r.entry] : []))
    report.bytes = entries.reduce((n, e) => n + e.size, 0)
    report.bytesWritten = report.segments.reduce((n, o) => n + o.bytesWritten, 0)

    // Decide CURRENT before writing GENERATION, so the record says whether it is a side generation.
    const currentName = 'name' in current ? current.name : null
    const currentSegments = currentName && generationSegmentCount(state, currentName)
    if (options.side) {
      report.side = true
      report.sideReason = 'asked to write beside CURRENT'
    } else if (entries.length === 0 && currentSegments && !options.force) {
      // An app that removed its segments at exit (or a namespace that lost
      // them) must not bury the saved state under an empty generation.
      report.side = true
      report.sideReason = `no segment to save, and CURRENT (${currentName}) holds ${currentSegments}: kept CURRENT (--force to switch to the empty generation)`
    } else if (currentName !== null && currentName !== report.parent && !options.force) {
      report.side = true
      report.sideReason = `CURRENT names ${currentName}, not this state's parent (${report.parent ?? 'none: this state was not restored from this state dir'}): another writer may share this state dir`
    } else if ('error' in current && !options.force) {
      report.side = true
      report.sideReason = `CURRENT is unreadable (${current.error})`
    }

    const record: GenerationRecord = {
      format: FORMAT,
      tool: 'shmkeep',
      toolVersion: version,
      name,
      seq,
      parent: report.parent,
      createdAt: new Date().toISOString(),
      hostname: os.hostname(),
      kernel: `${os.type()} ${os.release()} ${os.arch()}`,
      reason: options.reason ?? 'manual',
      clean: options.clean ?? false,
      side: report.side,
      ...(report.sideReason ? { sideReason: report.sideReason } : {}),
      ...(options.attachers?.length ? { inconsistent: { attachers: options.attachers } } : {}),
      bytes: report.bytes,
      bytesWritten: report.bytesWritten,
      durationMs: { total: Math.round(performance.now() - started), copy: Math.round(copyMs) },
      segments: entries,
    }
    writeNewFile(`${tmp}/${GENERATION_FILE}`, encodeCheckedJson(FORMAT, record))
    fsyncDir(tmp)
    options.signal?.throwIfAborted()
    fs.renameSync(tmp, state.path(name))
    tmp = undefined
    fsyncDir(state.dir)
    report.generation = name
    if (report.side) {
      log.log('error', 'snapshot.side', `generation ${name} written BESIDE CURRENT, which still names ${currentName ?? '(unreadable)'}: ${report.sideReason}. Use --force to switch anyway.`, { generation: name })
    } else {
      switching = name
      state.writeCurrent(name)
      report.current = true
    }
    // The snapshot is done. What follows is bookkeeping: a failure there is a
    // warning, never "no generation written".
    try {
      if (report.current) state.setLive(ns, name, listed.filter((x) => entries.some((e) => e.id === x.id)))
      const seen = new Set(scan.segments.map((s) => s.id))
      report.appeared = shm.list().filter((s) => !seen.has(s.id) && !s.dest && take(s)).map((s) => ({ key: formatKey(s.key), id: s.id, size: s.size }))
      for (const a of report.appeared) log.log('warn', 'snapshot.appeared', `segment ${a.key} (id ${a.id}) appeared during the snapshot and is not in it`, a)
      report.pruned = prune(state, { keep, protect: [report.parent], log })
    } catch (e) {
      log.log('warn', 'snapshot.after', `generation ${name} is complete${report.current ? ' and CURRENT' : ''}, but what follows failed: ${e instanceof Error ? e.message : String(e)}`)
    }
    report.durationMs = performance.now() - started
    return report
  } catch (e) {
    report.durationMs = performance.now() - started
    if (e instanceof SnapshotError) throw e
    if (switching) {
      // CURRENT.tmp was renamed over CURRENT but the state dir's fsync failed
      // (or something between): CURRENT may name the new generation, and
      // whether that survives a crash is unknown. Say exactly that.
      const now = StateDir.open(options.stateDir).readCurrent()
      const named = 'name' in now && now.name === switching
      throw new SnapshotError(
        `snapshot ${switching} is complete, but switching CURRENT to it failed: ${e instanceof Error ? e.message : String(e)}; ` +
          (named ? 'CURRENT names it, but it may not be durable yet' : 'CURRENT still names the previous generation'),
        report,
      )
    }
    if (options.signal?.aborted && e === options.signal.reason) throw new SnapshotError('snapshot abandoned (no generation written, CURRENT unchanged)', report)
    const reason = hasCode(e, 'ENOSPC', 'EIO', 'EDQUOT') ? ' (the disk refused the write; the previous generation is intact)' : ''
    throw new SnapshotError(`snapshot failed, no generation written (CURRENT unchanged): ${e instanceof Error ? e.message : String(e)}${reason}`, report)
  } finally {
    try {
      for (const fd of pendingFds) {
        try {
          fs.closeSync(fd)
        } catch {
          // the generation is abandoned anyway
        }
      }
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true })
    } finally {
      lock?.release()
    }
  }
}

