/**
 * A saved segment's bytes, wherever they are: its own data file (read by the
 * native workers) or its place in the generation's pack.data (small segments:
 * read here, a few pages each). Both check every data chunk against its CRC
 * before anything trusts it, and both fail the way the native workers do
 * (`errno` + `syscall`, or `code` ESIZE for a file too short), so that
 * restore tells damage from trouble of this machine in one place.
 */
import fs from 'node:fs'
import os from 'node:os'
import { lanesFor } from '../lanes'
import { mapFilesHere } from '../residency'
import { native, type CancelToken, type RawCheckResult } from '../native'
import { CHUNK_DATA, CHUNK_ENTRY_BYTES, type PackedRecord, type SegmentRecord } from './format'

const O = fs.constants

function isPacked(meta: SegmentRecord): meta is PackedRecord {
  return typeof (meta as PackedRecord).offset === 'number'
}

/** An error shaped as the native workers' (positive errno, syscall). */
function nativeLike(e: unknown, syscall: string): Error {
  const err = e as NodeJS.ErrnoException
  const out = new Error(err.message) as Error & { errno?: number; syscall?: string; code?: string }
  out.errno = Math.abs(err.errno ?? os.constants.errno.EIO)
  out.syscall = syscall
  return out
}

/**
 * pack.data kept open across the packed segments of one generation: a
 * restore of 2000 small segments opened, checked and closed it 2000 times.
 * `close()` when done with the generation.
 */
/** A pack.data up to this size is read whole, once: one read instead of one per segment. */
const READ_WHOLE = 64 << 20

export class PackFiles {
  private open = new Map<string, { fd: number; size: number; bytes?: Buffer }>()

  /**
   * The open pack file at `path` (opened and checked on first use), its size,
   * and its bytes when it is small enough to read whole (each packed chunk is
   * still checked against its CRC, as it lands in the segment).
   */
  get(path: string): { fd: number; size: number; bytes?: Buffer } {
    const known = this.open.get(path)
    if (known) return known
    let fd: number
    try {
      // O_NONBLOCK: a FIFO planted at the path must not hang the read.
      fd = fs.openSync(path, O.O_RDONLY | O.O_NOFOLLOW | O.O_NONBLOCK)
    } catch (e) {
      throw nativeLike(e, 'open')
    }
    try {
      const st = fs.fstatSync(fd)
      if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { errno: os.constants.errno.EINVAL, syscall: 'fstat' })
      const entry: { fd: number; size: number; bytes?: Buffer } = { fd, size: st.size }
      if (st.size <= READ_WHOLE) {
        const bytes = Buffer.allocUnsafe(st.size)
        let at = 0
        try {
          while (at < st.size) {
            const n = fs.readSync(fd, bytes, at, st.size - at, at)
            if (n === 0) break
            at += n
          }
        } catch (e) {
          throw nativeLike(e, 'pread')
        }
        // Shorter than fstat said (truncated meanwhile): what is there, and the size it has.
        entry.bytes = bytes.subarray(0, at)
        entry.size = at
      }
      this.open.set(path, entry)
      return entry
    } catch (e) {
      fs.closeSync(fd)
      throw e
    }
  }

  close(): void {
    for (const { fd } of this.open.values()) fs.closeSync(fd)
    this.open.clear()
  }
}

/** How many chunks of a packed segment hold data (0: all zero, nothing in pack.data). */
function dataChunksOf(meta: PackedRecord, table: Buffer): number {
  let n = 0
  for (let i = 0; i < meta.chunkCount; i++) if (table[i * CHUNK_ENTRY_BYTES + 4] === CHUNK_DATA) n++
  return n
}

/**
 * Read a packed segment's data chunks from pack.data and check their CRCs,
 * into `into` (the new segment itself) or a Buffer of its own. Returns the
 * segment's bytes (zero chunks left as they are) and the bad chunks.
 * `packs`: pack files open for the whole generation (else opened for this one).
 */
function readPacked(path: string, meta: PackedRecord, stopAtFirstBad: boolean, packs?: PackFiles, into?: Buffer): { badChunks: number[]; bytesRead: number } {
  const table = Buffer.from(meta.chunks, 'base64')
  // An all-zero segment has nothing in pack.data, which is not even written
  // when every packed segment is zero: there is nothing to open.
  if (dataChunksOf(meta, table) === 0) return { badChunks: [], bytesRead: 0 }
  const own = packs ? undefined : new PackFiles()
  const { fd, size: fileSize, bytes: whole } = (packs ?? own!).get(path)
  try {
    const bytes = into ?? Buffer.alloc(meta.size)
    const badChunks: number[] = []
    let bytesRead = 0
    for (let i = 0; i < meta.chunkCount; i++) {
      if (table[i * CHUNK_ENTRY_BYTES + 4] !== CHUNK_DATA) continue
      const start = i * meta.chunkSize
      const len = Math.min(meta.chunkSize, meta.size - start)
      const end = meta.offset + start + len
      if (end > fileSize) {
        throw Object.assign(new Error(`pack.data has ${fileSize} bytes; segment ${meta.key} (id ${meta.id}) ends at ${end}`), { code: 'ESIZE', fileSize, expectedSize: end })
      }
      let got: number
      try {
        got = whole ? whole.copy(bytes, start, meta.offset + start, end) : fs.readSync(fd, bytes, start, len, meta.offset + start)
      } catch (e) {
        throw nativeLike(e, 'pread')
      }
      bytesRead += got
      if (got !== len || native.crc32c(bytes.subarray(start, start + len)) !== table.readUInt32LE(i * CHUNK_ENTRY_BYTES)) {
        badChunks.push(i)
        if (stopAtFirstBad) break
      }
    }
    return { badChunks, bytesRead }
  } finally {
    own?.close()
  }
}

/** Check every data chunk of a saved segment against its CRC. */
export async function verifySaved(path: string, meta: SegmentRecord, { cancel }: { cancel?: CancelToken } = {}): Promise<RawCheckResult> {
  if (!isPacked(meta)) return native.verifyFile({ path, size: meta.size, chunkSize: meta.chunkSize, chunks: Buffer.from(meta.chunks, 'base64'), lanes: lanesFor(meta.size, meta.chunkSize), cancel })
  const { badChunks, bytesRead } = readPacked(path, meta, false)
  return { badChunks, bytesRead }
}

/**
 * Fill the new segment `target.id` (attached as target.uid/gid) with the
 * saved bytes, checking every chunk. The segment is new (0600, its final
 * mode and owner come only after every chunk verified): when a chunk is bad,
 * the caller removes it, whatever was read into it.
 */
export async function restoreSaved(
  path: string,
  meta: SegmentRecord,
  target: { id: number; uid: number; gid: number },
  stopAtFirstBad: boolean,
  { packs, cancel }: { packs?: PackFiles; cancel?: CancelToken } = {},
): Promise<RawCheckResult> {
  if (!isPacked(meta)) {
    // cancel: the worker stops within a chunk once the restore is aborted (ECANCELED).
    return native.restoreSegment({ id: target.id, uid: target.uid, gid: target.gid, path, size: meta.size, chunkSize: meta.chunkSize, chunks: Buffer.from(meta.chunks, 'base64'), stopAtFirstBad, lanes: lanesFor(meta.size, meta.chunkSize), mapFiles: mapFilesHere(), cancel })
  }
  // Nothing to write for an all-zero segment (a new segment is zero).
  if (dataChunksOf(meta, Buffer.from(meta.chunks, 'base64')) === 0) return { badChunks: [], bytesRead: 0 }
  // Straight into the segment: no Buffer of its own, no copy (small segments
  // by the thousand spent as long in those as in reading).
  const raw = native.shmAttach(target.id, false, 0, -1, target.uid, target.gid, meta.size)
  try {
    if (raw.buffer.length !== meta.size) throw Object.assign(new Error(`segment id ${target.id} has ${raw.buffer.length} bytes, not ${meta.size}`), { code: 'ESIZE' })
    return readPacked(path, meta, stopAtFirstBad, packs, raw.buffer)
  } finally {
    native.shmDetach(raw.handle, raw.buffer)
  }
}
