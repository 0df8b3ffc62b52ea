/**
 * Trusting a data file without reading all of it (docs/FORMAT.md, "Trusting
 * a data file"). An unchanged segment's data file is shared with the new
 * generation (a hard link) only when it is known good: a file damaged since
 * it was written must never be carried into a new generation while the good
 * bytes are still in memory. Reading the whole file at every checkpoint to
 * know that costs as much as writing it again, so each generation records
 * its data file's **stamp**: device, inode, size and modification time as
 * they were when its bytes were last known good (written from a checksummed
 * buffer, or checked against its CRCs), and where the **sweep** goes on.
 *
 * - Stamp as recorded: nothing wrote the file through the file system since
 *   (any write, truncate or replacement changes the inode, size or mtime).
 *   Only the sweep's share is read: chunks [sweep, sweep + n), n = 1/16 of
 *   the chunks (at least one), so a block that rots below the file system
 *   (mtime unchanged) is found within 16 snapshots that link the file.
 * - Stamp differs, or none (an older generation): the whole file is checked,
 *   as before stamps existed.
 *
 * ctime is not part of the stamp: shmkeep's own links and prunes change it
 * (every new link and every removed generation).
 */
import fs from 'node:fs'
import type { FileStamp } from './format'

/** Every chunk of a trusted file is read again within this many snapshots that link it. */
export const SWEEP_ROUNDS = 16

/** The stamp of an open file (or a path) now; sweep starts a new round. */
export function stampOf(file: number | string, sweep = 0): FileStamp {
  const st = typeof file === 'number' ? fs.fstatSync(file, { bigint: true }) : fs.statSync(file, { bigint: true })
  return { dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), sweep }
}

/** Whether a recorded stamp (from a record: any shape) names the file as it is now. */
export function sameFile(recorded: unknown, now: FileStamp): recorded is FileStamp {
  if (typeof recorded !== 'object' || recorded === null) return false
  const r = recorded as Partial<FileStamp>
  return r.dev === now.dev && r.ino === now.ino && r.size === now.size && r.mtimeNs === now.mtimeNs && Number.isInteger(r.sweep) && r.sweep! >= 0
}

/**
 * What to check of a file before it is linked: the sweep's next share when
 * the stamp holds, else every chunk; and where the sweep goes on after.
 */
export function checkPlan(recorded: unknown, now: FileStamp, chunkCount: number): { first: number; count: number; next: number; whole: boolean } {
  if (!sameFile(recorded, now) || chunkCount <= 0) return { first: 0, count: chunkCount, next: 0, whole: true }
  const first = recorded.sweep < chunkCount ? recorded.sweep : 0
  const count = Math.min(chunkCount - first, Math.max(1, Math.ceil(chunkCount / SWEEP_ROUNDS)))
  return { first, count, next: first + count >= chunkCount ? 0 : first + count, whole: false }
}
