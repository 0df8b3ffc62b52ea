/**
 * An independent fallback: a retained generation that shares no data file
 * (no inode, so no block) with CURRENT's. Incremental snapshots hard-link an
 * unchanged segment's file, so CURRENT and the generations before it can
 * share one inode: a block damaged there is damage to all of them, and the
 * fallback to an earlier generation would have nothing intact.
 *
 * After a checkpoint — off its critical path: `run`'s checkpointer calls
 * {@link keepFallback} once the checkpoint is complete, CURRENT switched and
 * the lock let go, and a stop aborts it (never after the final stop: the
 * container is about to exit) — when no retained generation is independent
 * of CURRENT, the newest
 * other complete generation gets copies of its own of the files it shares:
 * read, checked against its chunk CRCs, written, fsynced, renamed over the
 * link, the directory fsynced. The copy uses read/write (copy_file_range
 * would reflink silently on xfs and btrfs: shared blocks again). It costs
 * about the data's size once more on disk; on ENOSPC the linked generation
 * stays as it was (logged). Prune keeps that generation (state/prune.ts).
 */
import fs from 'node:fs'
import type { Logger } from '../log'
import { native } from '../native'
import { fsyncDir } from './files'
import { CHUNK_DATA, CHUNK_ENTRY_BYTES, isPartial, PACK_DATA, type GenerationRecord, type SegmentRecord } from './format'
import { StateDir } from './statedir'

const O = fs.constants
const PIECE = 4 << 20

/** device:inode of each data file of a generation (name → id); unreadable files are left out. */
function dataInodes(state: StateDir, name: string, record: GenerationRecord): Map<string, string> {
  const out = new Map<string, string>()
  for (const file of new Set(record.segments.map((e) => e.data))) {
    try {
      const st = fs.lstatSync(state.path(name, file))
      out.set(file, `${st.dev}:${st.ino}`)
    } catch {
      // missing: it shares nothing
    }
  }
  return out
}

function readable(state: StateDir, name: string): GenerationRecord | undefined {
  try {
    return state.readGeneration(name)
  } catch {
    return undefined
  }
}

/**
 * The newest retained main-line generation other than CURRENT that shares no
 * data file with it, if any; and the newest complete one that does (the one
 * to make independent).
 */
export function independentOfCurrent(
  state: StateDir,
  currentName: string,
  read: (name: string) => GenerationRecord | undefined = (name) => readable(state, name),
): { independent?: string; candidate?: { name: string; record: GenerationRecord; shared: string[] } } {
  const current = read(currentName)
  if (!current) return {}
  const theirs = new Set(dataInodes(state, currentName, current).values())
  let candidate: { name: string; record: GenerationRecord; shared: string[] } | undefined
  for (const g of state.generations().reverse()) {
    if (g.name === currentName) continue
    const r = read(g.name)
    if (!r || r.side || isPartial(r)) continue
    const shared = [...dataInodes(state, g.name, r)].filter(([, ino]) => theirs.has(ino)).map(([file]) => file)
    if (shared.length === 0) return { independent: g.name, ...(candidate ? { candidate } : {}) }
    candidate ??= { name: g.name, record: r, shared }
  }
  return candidate ? { candidate } : {}
}

/**
 * Copy a data file with read/write (on the thread pool: the event loop, and
 * with it the signals of `run`, stays free), every data chunk checked against
 * its CRC on the way; holes stay holes. Stops between pieces once `signal`
 * aborts.
 */
async function copyVerified(from: string, to: string, meta: SegmentRecord, signal?: AbortSignal): Promise<void> {
  const table = Buffer.from(meta.chunks, 'base64')
  const src = await fs.promises.open(from, O.O_RDONLY | O.O_NOFOLLOW)
  try {
    const dst = await fs.promises.open(to, O.O_WRONLY | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW, 0o600)
    try {
      await dst.truncate((await src.stat()).size)
      const buf = Buffer.allocUnsafe(Math.min(PIECE, meta.chunkSize))
      for (let i = 0; i < meta.chunkCount; i++) {
        if (table[i * CHUNK_ENTRY_BYTES + 4] !== CHUNK_DATA) continue
        const start = i * meta.chunkSize
        const len = Math.min(meta.chunkSize, meta.size - start)
        let crc = 0
        for (let at = 0; at < len; at += buf.length) {
          signal?.throwIfAborted()
          const n = Math.min(buf.length, len - at)
          if ((await src.read(buf, 0, n, start + at)).bytesRead !== n) throw new Error(`${from}: short read in chunk ${i}`)
          crc = native.crc32c(buf.subarray(0, n), crc)
          await dst.write(buf, 0, n, start + at)
        }
        if (crc !== table.readUInt32LE(i * CHUNK_ENTRY_BYTES)) throw new Error(`${from}: chunk ${i} fails its checksum`)
      }
      await dst.sync()
    } finally {
      await dst.close()
    }
  } finally {
    await src.close()
  }
}

/**
 * Make sure a retained generation is independent of CURRENT (see above).
 * Returns the generation made independent, or undefined when one was already
 * (or none could be). Under the state dir's lock.
 */
export async function ensureIndependent(state: StateDir, currentName: string, log: Logger, signal?: AbortSignal): Promise<string | undefined> {
  const { independent, candidate } = independentOfCurrent(state, currentName)
  if (independent || !candidate) return undefined
  const { name, record, shared } = candidate
  const metas = new Map<string, SegmentRecord>()
  for (const e of record.segments) if (shared.includes(e.data) && e.data !== PACK_DATA) metas.set(e.data, state.readSegment(name, e))
  const tmp = (file: string) => state.path(name, `.copy-${file}`)
  try {
    for (const [file, meta] of metas) {
      fs.rmSync(tmp(file), { force: true }) // left by a killed copy
      await copyVerified(state.path(name, file), tmp(file), meta, signal)
      signal?.throwIfAborted()
      fs.renameSync(tmp(file), state.path(name, file))
    }
    fsyncDir(state.path(name))
  } catch (e) {
    for (const file of metas.keys()) fs.rmSync(tmp(file), { force: true })
    if (signal?.aborted) {
      log.log('info', 'fallback.abandoned', `the copies that would make ${name} independent of ${currentName} were abandoned (stopping); it stays linked`, { generation: name })
      return undefined
    }
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      log.log('warn', 'fallback.nospace', `no room to give ${name} copies of its own of the files it shares with ${currentName} (${code}): it stays linked; one damaged file would now hit both`)
      return undefined
    }
    log.log('warn', 'fallback.failed', `could not give ${name} copies of its own of the files it shares with ${currentName}: ${(e as Error).message}`)
    return undefined
  }
  log.log('info', 'fallback', `${name} now has copies of its own of ${metas.size} file(s) it shared with ${currentName}: an independent fallback`, { generation: name, files: metas.size })
  return name
}

/**
 * The fallback copy after a checkpoint, as a step of its own (see above):
 * the state dir's lock taken without waiting (another writer holds it: not
 * now, the next checkpoint tries again), then {@link ensureIndependent} of
 * what CURRENT names. `signal` (the stop) abandons it between pieces: the
 * generation stays linked, no temporary copy is left. Never throws: what
 * fails is logged, and the linked generation stays as it was.
 */
export async function keepFallback(o: { stateDir: string; insecureStateDir?: boolean; signal?: AbortSignal; log: Logger }): Promise<string | undefined> {
  let lock: { release(): void } | undefined
  try {
    o.signal?.throwIfAborted()
    const state = StateDir.open(o.stateDir, { insecure: o.insecureStateDir })
    lock = await state.lock({ timeoutMs: 0, signal: o.signal })
    const current = state.readCurrent()
    if (!('name' in current) || current.name === null) return undefined
    return await ensureIndependent(state, current.name, o.log, o.signal)
  } catch (e) {
    if (o.signal?.aborted) return undefined
    const message = e instanceof Error ? e.message : String(e)
    if (/EWOULDBLOCK|EAGAIN/.test(message) || ['EWOULDBLOCK', 'EAGAIN'].includes((e as NodeJS.ErrnoException).code ?? '')) {
      o.log.log('debug', 'fallback.busy', 'the independent fallback copy waits for the next checkpoint: another writer holds the state dir')
      return undefined
    }
    o.log.log('warn', 'fallback.failed', `could not check or make the independent fallback: ${message}`)
    return undefined
  } finally {
    lock?.release()
  }
}
