/**
 * Writing one generation: begin (a private `.tmp-gen-N/`), add files, commit
 * (every file fsynced, GENERATION written and fsynced, the directory fsynced,
 * renamed into place, the state dir fsynced), switch CURRENT, or abandon.
 *
 * Files are created here (0600, O_EXCL|O_NOFOLLOW) and stay open until
 * commit fsyncs them through the same descriptor: a descriptor opened later
 * would not hear of a failed write-back. Those fsyncs run in parallel on the
 * thread pool (one file system, many small files: the disk takes them as one
 * batch) — never `syncfs`, which on a bind-mounted host file system flushes
 * every tenant's data. Whatever the order in which they finish, all of them
 * end before GENERATION is written: that is the durability order
 * docs/FORMAT.md states and test/crash.test.ts proves. A failed fsync is
 * never retried (the page cache may have dropped the data): the generation is
 * abandoned.
 */
import fs from 'node:fs'
import { encodeCheckedJson, fsyncDir, makePrivateDir, openNewFile } from './files'
import { FORMAT, GENERATION_FILE, generationName, TMP_PREFIX } from './format'
import type { StateDir } from './statedir'

/** Open descriptors before the writer fsyncs (and closes) them early: far below any RLIMIT_NOFILE. */
const MAX_OPEN = 256
/** fsyncs in flight at once. */
const PARALLEL_FSYNC = 16

function fsyncClose(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.fsync(fd, (err) => {
      fs.close(fd, () => (err ? reject(err) : resolve()))
    })
  })
}

export type WriterState = 'writing' | 'renamed' | 'switching' | 'current' | 'abandoned'

export class GenerationWriter {
  /** Files created and written, not yet fsynced: name → descriptor. */
  private readonly open = new Map<string, number>()
  private _state: WriterState = 'writing'

  private constructor(
    readonly stateDir: StateDir,
    readonly name: string,
    readonly seq: number,
    readonly dir: string,
  ) {}

  /** A new generation: the next sequence number, its temporary directory made. */
  static begin(stateDir: StateDir): GenerationWriter {
    const seq = stateDir.nextSeq()
    const name = generationName(seq)
    const dir = stateDir.path(TMP_PREFIX + name)
    makePrivateDir(dir)
    return new GenerationWriter(stateDir, name, seq, dir)
  }

  get state(): WriterState {
    return this._state
  }

  path(file: string): string {
    return `${this.dir}/${file}`
  }

  /**
   * Create a file of the generation and return its descriptor (left open:
   * commit fsyncs through it). The caller writes it, e.g. a native copy.
   */
  create(file: string): number {
    const fd = openNewFile(this.path(file))
    this.open.set(file, fd)
    return fd
  }

  /** Create a file with these bytes (fsynced at commit). */
  addFile(file: string, data: string | Uint8Array): void {
    fs.writeFileSync(this.create(file), data)
  }

  /** Share a file of an earlier generation (a hard link: its inode was fsynced when written). */
  link(from: string, file: string): void {
    fs.linkSync(from, this.path(file))
  }

  /** Take a file back out (a segment redone or dropped): closed without fsync, unlinked. */
  remove(file: string): void {
    const fd = this.open.get(file)
    if (fd !== undefined) {
      this.open.delete(file)
      fs.closeSync(fd)
    }
    fs.rmSync(this.path(file), { force: true })
  }

  /** fsync early when many files are open (same order guarantees: still before GENERATION). */
  async relieve(): Promise<void> {
    if (this.open.size >= MAX_OPEN) await this.syncFiles()
  }

  /** fsync and close every open file, several at once. The first error is thrown, after all have returned. */
  async syncFiles(): Promise<void> {
    const fds = [...this.open.values()]
    this.open.clear()
    let first: unknown
    let next = 0
    const lane = async () => {
      while (next < fds.length) {
        const fd = fds[next++]!
        try {
          await fsyncClose(fd)
        } catch (e) {
          first ??= e
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(PARALLEL_FSYNC, fds.length) }, lane))
    if (first !== undefined) throw first
  }

  /**
   * Make the generation complete on disk and give it its name: every file
   * fsynced, GENERATION written and fsynced, the directory fsynced, renamed
   * to `gen-N`, the state dir fsynced.
   */
  async commit(record: unknown): Promise<void> {
    if (this._state !== 'writing') throw new Error(`generation ${this.name} is ${this._state}, not being written`)
    await this.syncFiles()
    this.addFile(GENERATION_FILE, encodeCheckedJson(FORMAT, record))
    await this.syncFiles()
    fsyncDir(this.dir)
    fs.renameSync(this.dir, this.stateDir.path(this.name))
    this._state = 'renamed'
    fsyncDir(this.stateDir.dir)
  }

  /** Point CURRENT at the committed generation (CURRENT.tmp, fsync, rename, fsync the state dir). */
  switchCurrent(): void {
    if (this._state !== 'renamed') throw new Error(`generation ${this.name} is ${this._state}: only a committed generation becomes CURRENT`)
    this._state = 'switching'
    this.stateDir.writeCurrent(this.name)
    this._state = 'current'
  }

  /** Give up: close what is open and remove the temporary directory (a committed generation stays). */
  abandon(): void {
    for (const fd of this.open.values()) {
      try {
        fs.closeSync(fd)
      } catch {
        // abandoned anyway
      }
    }
    this.open.clear()
    if (this._state === 'writing') {
      this._state = 'abandoned'
      fs.rmSync(this.dir, { recursive: true, force: true })
    }
  }
}
