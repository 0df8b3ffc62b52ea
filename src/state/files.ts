/**
 * Durable, checked files in the state dir (the way Redis' rdb.c writes):
 * write to a temporary name, fsync the file, rename it into place, fsync the
 * directory. Metadata files carry a CRC-32C header so a flipped byte or a
 * truncation is an error naming the file, never a silent misread.
 *
 * Every file is created 0600 with O_EXCL|O_NOFOLLOW, every directory 0700:
 * shared memory often holds private data, and a symlink planted in the state
 * dir must not redirect a write.
 */
import fs from 'node:fs'
import path from 'node:path'
import { native } from '../native'

const O = fs.constants

/** A problem with a state file: what is wrong and which file. */
export class StateFileError extends Error {
  constructor(
    readonly file: string,
    message: string,
    readonly code = 'EBADSTATE',
  ) {
    super(`${file}: ${message}`)
  }
}

/**
 * The state dir does not exist (code ENOENT). `restore` and `shmkeep run`
 * never create it and never take it for a first start: a mistyped path, or a
 * volume that was not mounted, would otherwise start the app empty and keep
 * its state in the container's own file system, lost with it.
 */
export class StateDirMissingError extends StateFileError {
  constructor(dir: string) {
    super(dir, "does not exist — mount a volume there (restore and run never create the state dir: one made in the container's own file system would die with the container)", 'ENOENT')
  }
}
StateDirMissingError.prototype.name = 'StateDirMissingError'

/**
 * A state file that could not be read for a reason that is not proof of
 * damage (EIO from a network volume, EMFILE, ENOMEM, EINTR, EACCES…): the
 * restore fails naming file and errno, and no generation is quarantined for
 * it. Retrying may work; a persistent EIO (a bad sector) is for the operator.
 */
export class StateIOError extends Error {
  constructor(
    readonly file: string,
    readonly code: string,
    cause: Error,
  ) {
    super(`${file}: ${code}: ${cause.message.replace(/^[A-Z]+: /, '')} (not proof of damage: nothing was quarantined)`)
  }
}

/** A Node fs error as a StateIOError naming the file (a StateFileError passes through). */
export function ioError(file: string, e: unknown): Error {
  if (e instanceof StateFileError || e instanceof StateIOError) return e
  const code = (e as NodeJS.ErrnoException).code
  return code ? new StateIOError(file, code, e as Error) : (e as Error)
}

/** fsync a directory, so that the names created or renamed in it are durable. */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, O.O_RDONLY | O.O_DIRECTORY)
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** Open a new file for writing: never an existing one, never through a symlink; 0600. */
export function openNewFile(file: string): number {
  return fs.openSync(file, O.O_WRONLY | O.O_CREAT | O.O_EXCL | O.O_NOFOLLOW, 0o600)
}

/** Create a new file, write, fsync, close. */
export function writeNewFile(file: string, data: string | Uint8Array): void {
  const fd = openNewFile(file)
  try {
    fs.writeFileSync(fd, data)
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Replace `file` atomically: write `file.tmp`, fsync, rename over `file`,
 * fsync the directory. A leftover `.tmp` from a killed writer is ours to remove.
 * `durable: false` leaves out both fsyncs, for records that only matter while
 * an IPC namespace lives (a crash of the host ends the namespace too): still
 * atomic for readers and across a SIGKILL, which keeps the page cache.
 */
export function replaceFile(file: string, data: string | Uint8Array, { durable = true } = {}): void {
  const tmp = file + '.tmp'
  fs.rmSync(tmp, { force: true })
  if (durable) {
    writeNewFile(tmp, data)
  } else {
    const fd = openNewFile(tmp)
    try {
      fs.writeFileSync(fd, data)
    } finally {
      fs.closeSync(fd)
    }
  }
  fs.renameSync(tmp, file)
  if (durable) fsyncDir(path.dirname(file))
}

/**
 * Read a regular file without following a symlink; a clear error for anything
 * else. O_NONBLOCK: a FIFO planted in the place of a state file must never
 * hang the open (a restore holding the lock, deaf to TERM); once it is known
 * to be a regular file the flag changes nothing.
 */
export function readRegularFile(file: string, maxBytes: number): Buffer {
  let fd: number
  try {
    fd = fs.openSync(file, O.O_RDONLY | O.O_NOFOLLOW | O.O_NONBLOCK)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw new StateFileError(file, 'is a symbolic link; shmkeep never follows links in the state dir', 'ELOOP')
    if (code === 'ENOENT') throw new StateFileError(file, 'is missing', 'ENOENT')
    if (code === 'ENOTDIR') throw new StateFileError(file, 'is missing (a file where its directory should be)', 'ENOENT')
    throw ioError(file, e)
  }
  try {
    const st = fs.fstatSync(fd)
    if (!st.isFile()) throw new StateFileError(file, `is not a regular file${st.isDirectory() ? '' : ` (${fileKind(st)})`}`, 'EISDIR')
    if (st.size > maxBytes) throw new StateFileError(file, `is ${st.size} bytes, more than a ${path.basename(file)} can be (${maxBytes})`)
    return fs.readFileSync(fd)
  } catch (e) {
    throw ioError(file, e)
  } finally {
    fs.closeSync(fd)
  }
}

/** "a FIFO", "a directory"… for messages. */
export function fileKind(st: fs.Stats): string {
  if (st.isFIFO()) return 'a FIFO'
  if (st.isDirectory()) return 'a directory'
  if (st.isSymbolicLink()) return 'a symbolic link'
  if (st.isSocket()) return 'a socket'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  return st.isFile() ? 'a regular file' : 'not a file'
}

const HEADER = /^shmkeep-json (\d+) crc32c=([0-9a-f]{8}) length=(\d+)\n/

/** Largest metadata file we read (a 64 TiB segment in 1 MiB chunks fits). */
const MAX_META_BYTES = 1 << 30

/**
 * Write JSON with a checking header:
 * `shmkeep-json <format> crc32c=<hex> length=<bytes>\n<json>`.
 */
export function encodeCheckedJson(format: number, value: unknown, { alignTo = 1, compact = false } = {}): Buffer {
  // compact: no indentation (GENERATION with thousands of packed records is
  // a third smaller, and as much quicker to write, read and parse).
  const json = compact ? JSON.stringify(value) : JSON.stringify(value, null, 1)
  // alignTo: spaces before the final newline (JSON allows them) until the
  // whole file is a multiple of alignTo bytes; the length field may grow a
  // digit meanwhile, hence the loop.
  for (let pad = 0; ; pad++) {
    const body = Buffer.from(json + ' '.repeat(pad) + '\n')
    const crc = native.crc32c(body).toString(16).padStart(8, '0')
    const out = Buffer.concat([Buffer.from(`shmkeep-json ${format} crc32c=${crc} length=${body.length}\n`), body])
    if (out.length % alignTo === 0) return out
  }
}

/**
 * Read what {@link encodeCheckedJson} wrote. A format this reader does not
 * know is refused (it may mean something else), as is any damage.
 */
export function readCheckedJson<T>(file: string, knownFormats: number | readonly number[]): T {
  return readCheckedJsonAndTail<T>(file, knownFormats, false).value
}

/**
 * {@link readCheckedJson} of a file that may go on after the checked JSON
 * (`withTail`: a log appended to it, e.g. RESTORING's): the JSON, and the
 * bytes after it.
 */
export function readCheckedJsonAndTail<T>(file: string, knownFormats: number | readonly number[], withTail = true): { value: T; tail: Buffer } {
  const known = typeof knownFormats === 'number' ? [knownFormats] : knownFormats
  const data = readRegularFile(file, MAX_META_BYTES)
  const newline = data.indexOf(10)
  const m = HEADER.exec(data.subarray(0, newline + 1).toString('latin1'))
  if (!m) throw new StateFileError(file, 'has no shmkeep header (damaged, or not written by shmkeep)')
  const format = Number(m[1])
  if (!known.includes(format)) {
    throw new StateFileError(file, `is format ${format}; this shmkeep reads format ${known.join(' and ')} only (use the shmkeep version that wrote it)`, 'EFORMAT')
  }
  const length = Number(m[3])
  const rest = data.subarray(newline + 1)
  if (withTail ? rest.length < length : rest.length !== length) throw new StateFileError(file, `is truncated or padded: ${rest.length} bytes of data, header says ${m[3]}`)
  const body = rest.subarray(0, length)
  const crc = native.crc32c(body).toString(16).padStart(8, '0')
  if (crc !== m[2]) throw new StateFileError(file, `checksum mismatch (crc32c ${crc}, header says ${m[2]}): the file is damaged`)
  try {
    return { value: JSON.parse(body.toString('utf8')) as T, tail: rest.subarray(length) }
  } catch {
    throw new StateFileError(file, 'checksum matches but the JSON does not parse')
  }
}

/** mkdir 0700 that fails if the name exists (we never write into what we did not create). */
export function makePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { mode: 0o700 })
}
