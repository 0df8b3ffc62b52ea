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
import { native, type RawCheckResult } from '../native'
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
 * Read a packed segment's data chunks from pack.data and check their CRCs.
 * Returns the segment's bytes (zero chunks left zero) and the bad chunks.
 */
function readPacked(path: string, meta: PackedRecord, stopAtFirstBad: boolean): { bytes: Buffer; badChunks: number[]; bytesRead: number } {
  const table = Buffer.from(meta.chunks, 'base64')
  let dataChunks = 0
  for (let i = 0; i < meta.chunkCount; i++) if (table[i * CHUNK_ENTRY_BYTES + 4] === CHUNK_DATA) dataChunks++
  // An all-zero segment has nothing in pack.data, which is not even written
  // when every packed segment is zero: there is nothing to open.
  if (dataChunks === 0) return { bytes: Buffer.alloc(0), badChunks: [], bytesRead: 0 }
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
    const bytes = Buffer.alloc(meta.size)
    const badChunks: number[] = []
    let bytesRead = 0
    for (let i = 0; i < meta.chunkCount; i++) {
      if (table[i * CHUNK_ENTRY_BYTES + 4] !== CHUNK_DATA) continue
      const start = i * meta.chunkSize
      const len = Math.min(meta.chunkSize, meta.size - start)
      const end = meta.offset + start + len
      if (end > st.size) {
        throw Object.assign(new Error(`pack.data has ${st.size} bytes; segment ${meta.key} (id ${meta.id}) ends at ${end}`), { code: 'ESIZE', fileSize: st.size, expectedSize: end })
      }
      let got: number
      try {
        got = fs.readSync(fd, bytes, start, len, meta.offset + start)
      } catch (e) {
        throw nativeLike(e, 'pread')
      }
      bytesRead += got
      if (got !== len || native.crc32c(bytes.subarray(start, start + len)) !== table.readUInt32LE(i * CHUNK_ENTRY_BYTES)) {
        badChunks.push(i)
        if (stopAtFirstBad) break
      }
    }
    return { bytes, badChunks, bytesRead }
  } finally {
    fs.closeSync(fd)
  }
}

/** Check every data chunk of a saved segment against its CRC. */
export async function verifySaved(path: string, meta: SegmentRecord): Promise<RawCheckResult> {
  if (!isPacked(meta)) return native.verifyFile({ path, size: meta.size, chunkSize: meta.chunkSize, chunks: Buffer.from(meta.chunks, 'base64') })
  const { badChunks, bytesRead } = readPacked(path, meta, false)
  return { badChunks, bytesRead }
}

/**
 * Fill the new segment `target.id` (attached as target.uid/gid) with the
 * saved bytes, every chunk verified first. A packed segment is verified whole
 * before a byte is copied: nothing is written into the segment when a chunk
 * is bad.
 */
export async function restoreSaved(path: string, meta: SegmentRecord, target: { id: number; uid: number; gid: number }, stopAtFirstBad: boolean): Promise<RawCheckResult> {
  if (!isPacked(meta)) {
    return native.restoreSegment({ id: target.id, uid: target.uid, gid: target.gid, path, size: meta.size, chunkSize: meta.chunkSize, chunks: Buffer.from(meta.chunks, 'base64'), stopAtFirstBad })
  }
  const { bytes, badChunks, bytesRead } = readPacked(path, meta, stopAtFirstBad)
  // Nothing to write for a bad or an all-zero segment (a new segment is zero).
  if (badChunks.length || bytesRead === 0) return { badChunks, bytesRead }
  const raw = native.shmAttach(target.id, false, 0, -1, target.uid, target.gid, bytes.length)
  try {
    if (raw.buffer.length !== bytes.length) throw Object.assign(new Error(`segment id ${target.id} has ${raw.buffer.length} bytes, not ${bytes.length}`), { code: 'ESIZE' })
    bytes.copy(raw.buffer)
  } finally {
    native.shmDetach(raw.handle, raw.buffer)
  }
  return { badChunks, bytesRead }
}
