/**
 * The state directory: its generations, CURRENT, the writer lock, and the
 * record of a restore in progress in a live IPC namespace (RESTORING).
 * Everything here is about names and files; what to save or restore is
 * decided in src/snapshot.ts and src/restore.ts.
 */
import fs from 'node:fs'
import path from 'node:path'
import { lockFile, type FileLock } from '../lock'
import type { Logger } from '../log'
import { fsyncDir, readCheckedJson, readCheckedJsonAndTail, readRegularFile, replaceFile, encodeCheckedJson, StateDirMissingError, StateFileError } from './files'
import { checkGenerationRecord, checkSegmentRecord } from './validate'
import { checkTrust, insecureFromEnv, mountWarning, placeProblem, volatileWarning } from './trust'
import {
  CURRENT_FILE,
  FORMAT,
  GENERATION_FILE,
  generationSeq,
  LIVE_FILE,
  LOCK_FILE,
  PACK_DATA,
  QUARANTINE_PREFIX,
  READABLE_FORMATS,
  RESTORING_FILE,
  TMP_PREFIX,
  type GenerationRecord,
  type SegmentEntry,
  type SegmentRecord,
  checkPacked,
  upgradeGeneration,
} from './format'

/** A restore in progress in one IPC namespace (the RESTORING file). */
export interface RestoringRecord {
  ns: string
  pid: number
  generation: string
  startedAt: string
  /** Keys it is restoring. */
  keys: string[]
  /** Segments created so far (ids); with pid, enough to remove them after a kill. */
  created: Array<{ key: string; id: number }>
}

/**
 * RESTORING while its restore runs: the plan was written once; each segment
 * created is appended as one line (one write(2), no rewrite and no rename —
 * rewriting the whole record per segment cost 2000 renames, ~9 s, for 2000
 * small segments).
 */
export interface RestoringLog {
  /** Record a segment created (before anything is written into it). */
  created(key: string, id: number): void
  close(): void
}

/**
 * One appended line: "created 0x0000abcd 12345", padded with spaces to 32
 * bytes so that no line crosses a page boundary (the record starts on one,
 * and its JSON part is padded too). A write(2) within one page of the page
 * cache is never torn by a SIGKILL, so each line is there whole or not at
 * all; a torn line could only come from a host crash, which ends the
 * namespace too (the record is then moot, and read as damaged).
 */
const LINE = 32
const CREATED = /^created (0x[0-9a-f]{8}) (\d+) *$/

export interface GenerationDir {
  name: string
  seq: number
  path: string
}

/** Warnings already given in this process (once per state dir). */
const warned = new Set<string>()

export interface OpenOptions {
  /** Make it (0700) when missing — `snapshot` only: restore and run never do. */
  create?: boolean
  /** Trust it whoever can write it (`--insecure-state-dir`; default: SHMKEEP_INSECURE_STATE_DIR). */
  insecure?: boolean
  /** Where to say that it was created, and (with `warn`) that its state may not last. */
  log?: Logger
  /** Warn once when it is on tmpfs/ramfs or not a mount point (`run` and `restore`). */
  warn?: boolean
}

/** A user-given generation name: a generation or a quarantined one, nothing else. */
const USER_GENERATION = /^(quarantine-)?gen-\d{12}(\.\d+)?$/

export class StateDir {
  private constructor(
    readonly dir: string,
    /** The real path (symbolic links resolved): what the place and trust checks looked at. */
    readonly real: string,
  ) {}

  /**
   * Open a state dir, refusing one that cannot be trusted (src/state/trust.ts)
   * or that lies under /proc, /sys or /dev. Only with `create` is a missing
   * one made: a mistyped --state-dir made silently would keep the state in
   * the container's own layer, lost with it.
   */
  static open(dir: string, { create = false, insecure = insecureFromEnv(), log, warn = false }: OpenOptions = {}): StateDir {
    if (typeof dir !== 'string' || dir === '') throw new TypeError('a state dir is required (--state-dir or SHMKEEP_STATE_DIR)')
    const abs = path.resolve(dir)
    let st: fs.Stats
    try {
      st = fs.statSync(abs)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
      if (!create) {
        throw new StateDirMissingError(abs)
      }
      const place = placeProblem(realPathOfMissing(abs))
      if (place) throw new StateFileError(abs, place, 'EPLACE')
      fs.mkdirSync(abs, { recursive: true, mode: 0o700 })
      st = fs.statSync(abs)
      log?.log('info', 'state.created', `created the state dir ${abs} (it did not exist)`, { stateDir: abs })
    }
    const real = fs.realpathSync(abs)
    const place = placeProblem(real)
    if (place) throw new StateFileError(abs, place, 'EPLACE')
    if (!st.isDirectory()) throw new StateFileError(abs, 'is not a directory', 'ENOTDIR')
    checkTrust(abs, insecure)
    if (warn && log && !warned.has(real)) {
      warned.add(real)
      for (const w of [volatileWarning(real), mountWarning(real)]) if (w) log.log('warn', 'state.volatile', w, { stateDir: abs })
    }
    return new StateDir(abs, real)
  }

  path(...names: string[]): string {
    return path.join(this.dir, ...names)
  }

  /** The writer lock (flock on LOCK). */
  lock(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<FileLock> {
    return lockFile(this.path(LOCK_FILE), { exclusive: true, ...options })
  }

  /**
   * Why nothing can be written in the state dir (a read-only mount, a user
   * without write permission), or undefined when it can be. A restore needs
   * only to read: from such a dir it records nothing there.
   */
  readOnly(): string | undefined {
    try {
      fs.accessSync(this.dir, fs.constants.W_OK)
      return undefined
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'EROFS') return 'a read-only mount (EROFS)'
      if (code === 'EACCES' || code === 'EPERM') return `not writable by this user (${code})`
      return undefined // anything else shows when something is written
    }
  }

  /**
   * The lock a reader of a read-only state dir can take: a shared flock on
   * LOCK opened read-only. It keeps out writers working through another,
   * writable mount of the same volume (they take it exclusively). When LOCK
   * is missing there is nothing to lock — no writer has used the dir since it
   * was made, and none can create LOCK through this mount — and the restore
   * goes on without (a writer elsewhere racing it is the same as one that
   * started just after: it writes a new generation beside what is read).
   */
  async readLock(options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<FileLock> {
    try {
      return await lockFile(this.path(LOCK_FILE), { exclusive: false, readOnly: true, ...options })
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e
      return { path: this.path(LOCK_FILE), release() {} }
    }
  }

  /**
   * Remove what a killed writer left: `.tmp-*` directories and `*.tmp` files
   * of ours. Only under the lock. Returns the names removed.
   */
  removeStaleTemporaries(): string[] {
    const removed: string[] = []
    for (const name of fs.readdirSync(this.dir)) {
      const ours =
        name.startsWith(TMP_PREFIX + 'gen-') ||
        [CURRENT_FILE, LIVE_FILE, RESTORING_FILE, 'STOPPING', 'LINEAGE'].some((f) => name === f + '.tmp')
      if (!ours) continue
      fs.rmSync(this.path(name), { recursive: true, force: true })
      removed.push(name)
    }
    if (removed.length) fsyncDir(this.dir)
    return removed
  }

  /** Complete generation directories, oldest first. Anything else in the dir is ignored. */
  generations(): GenerationDir[] {
    const out: GenerationDir[] = []
    for (const entry of fs.readdirSync(this.dir, { withFileTypes: true })) {
      const seq = generationSeq(entry.name)
      if (seq === undefined || !entry.isDirectory()) continue
      out.push({ name: entry.name, seq, path: this.path(entry.name) })
    }
    return out.sort((a, b) => a.seq - b.seq)
  }

  /** The next sequence number: above every generation, temporary or quarantined one ever seen here. */
  nextSeq(): number {
    let max = 0
    for (const name of fs.readdirSync(this.dir)) {
      const m = /gen-(\d{12})/.exec(name)
      if (m) max = Math.max(max, Number(m[1]))
    }
    return max + 1
  }

  /** What CURRENT names: a generation name, null when there is no CURRENT, or an error when it is unreadable. */
  readCurrent(): { name: string | null } | { error: string } {
    let text: string
    try {
      text = readRegularFile(this.path(CURRENT_FILE), 4096).toString('utf8')
    } catch (e) {
      if (e instanceof StateFileError && e.code === 'ENOENT') return { name: null }
      if (!(e instanceof StateFileError)) throw e // EIO and friends: not proof that CURRENT is damaged
      return { error: e.message }
    }
    const name = text.trim()
    if (generationSeq(name) === undefined || text !== name + '\n') {
      return { error: `${this.path(CURRENT_FILE)}: does not name a generation (${JSON.stringify(text.slice(0, 40))})` }
    }
    return { name }
  }

  /** Point CURRENT at a generation: CURRENT.tmp, fsync, rename, fsync the dir. */
  writeCurrent(name: string): void {
    replaceFile(this.path(CURRENT_FILE), name + '\n')
  }

  /**
   * Check a generation name given by a user (`restore --generation`,
   * `inspect`, `verify`): a plain name of a generation or a quarantined one
   * that is a directory here — never a path, never a symbolic link (a
   * symlinked directory would take every read outside the state dir).
   */
  generationDir(name: string): string {
    if (typeof name !== 'string' || !USER_GENERATION.test(name)) {
      throw new StateFileError(String(name), 'is not a generation name (e.g. gen-000000000042, or quarantine-gen-000000000041 for one moved aside)', 'EINVAL')
    }
    let st: fs.Stats
    try {
      st = fs.lstatSync(this.path(name))
    } catch {
      throw new StateFileError(name, `no such generation in ${this.dir}`, 'ENOENT')
    }
    if (st.isSymbolicLink()) throw new StateFileError(this.path(name), 'is a symbolic link; shmkeep never enters one in the state dir', 'ELOOP')
    if (!st.isDirectory()) throw new StateFileError(this.path(name), 'is not a generation directory', 'ENOTDIR')
    return name
  }

  /** Quarantined generations (moved aside after failing verification), oldest first. */
  quarantined(): GenerationDir[] {
    const out: GenerationDir[] = []
    for (const entry of fs.readdirSync(this.dir, { withFileTypes: true })) {
      if (!entry.name.startsWith(QUARANTINE_PREFIX) || !USER_GENERATION.test(entry.name) || !entry.isDirectory()) continue
      out.push({ name: entry.name, seq: generationSeq(entry.name.slice(QUARANTINE_PREFIX.length).replace(/\.\d+$/, ''))!, path: this.path(entry.name) })
    }
    return out.sort((a, b) => a.seq - b.seq || a.name.localeCompare(b.name))
  }

  /**
   * A generation's record, read and checked once per StateDir (one command):
   * a complete generation never changes (it is written under a temporary
   * name and renamed), and a restore of thousands of segments asked for it
   * three times (warmth, candidates, the restore), each time validating every
   * entry. quarantine() forgets the name it moves.
   */
  readGeneration(name: string): GenerationRecord {
    this.generationDir(name)
    const known = this.records.get(name)
    if (known) return known
    const record = this.readGenerationUncached(name)
    this.records.set(name, record)
    return record
  }

  private readonly records = new Map<string, GenerationRecord>()

  /**
   * A generation this process has just committed, as it wrote it: prune and
   * the fallback would otherwise read back and check the record (1 MB for
   * 2000 packed segments) that is still in memory.
   */
  remember(name: string, record: GenerationRecord): void {
    this.records.set(name, record)
  }

  private readGenerationUncached(name: string): GenerationRecord {
    const record = upgradeGeneration(readCheckedJson<GenerationRecord>(this.path(name, GENERATION_FILE), READABLE_FORMATS))
    // A quarantined generation keeps the name it was written with.
    const plain = name.startsWith(QUARANTINE_PREFIX) ? name.slice(QUARANTINE_PREFIX.length).replace(/\.\d+$/, '') : name
    if (record.name !== plain) throw new StateFileError(this.path(name, GENERATION_FILE), `says it is ${record.name}, but lives in ${name}`)
    checkGenerationRecord(this.path(name, GENERATION_FILE), record)
    return record
  }

  readSegment(generation: string, entry: SegmentEntry): SegmentRecord {
    if (entry.packed) return checkPacked(this.path(generation, GENERATION_FILE), entry)
    const file = this.path(generation, safeName(entry.meta))
    const record = readCheckedJson<SegmentRecord>(file, READABLE_FORMATS)
    if (record.key !== entry.key || record.id !== entry.id || record.size !== entry.size) {
      throw new StateFileError(
        file,
        `describes segment ${record.key} (id ${record.id}, ${record.size} bytes) but ${GENERATION_FILE} lists ${entry.key} (id ${entry.id}, ${entry.size} bytes)`,
      )
    }
    // The data file must be the one GENERATION names, inside this generation.
    if (record.data !== safeName(entry.data)) throw new StateFileError(file, `names the data file ${JSON.stringify(record.data)} but ${GENERATION_FILE} lists ${entry.data}`)
    checkSegmentRecord(file, record)
    return record
  }

  /** Move a generation that failed verification aside (never delete it). Returns the new name (undefined: it was not there). */
  quarantine(name: string): string | undefined {
    if (!fs.existsSync(this.path(name))) return undefined // CURRENT named a generation that is not here
    let target = QUARANTINE_PREFIX + name
    for (let n = 2; fs.existsSync(this.path(target)); n++) target = `${QUARANTINE_PREFIX}${name}.${n}`
    fs.renameSync(this.path(name), this.path(target))
    this.records.delete(name)
    fsyncDir(this.dir)
    return target
  }

  /**
   * The restore in progress, if any. An unreadable record (it is written
   * without fsync, so a host crash can leave it empty) belongs to a namespace
   * that died with the host: it is removed and reported as `damaged`.
   */
  readRestoring(): RestoringRecord | null | { damaged: string } {
    const file = this.path(RESTORING_FILE)
    try {
      const { value, tail } = readCheckedJsonAndTail<RestoringRecord>(file, READABLE_FORMATS)
      const text = tail.toString('latin1')
      if (text.length % LINE !== 0) throw new StateFileError(file, `ends in a torn line (${text.length % LINE} bytes)`)
      for (let at = 0; at < text.length; at += LINE) {
        const line = text.slice(at, at + LINE)
        const m = CREATED.exec(line.slice(0, -1))
        if (!m || !line.endsWith('\n')) throw new StateFileError(file, `has a line that is not "created KEY ID": ${JSON.stringify(line)}`)
        value.created.push({ key: m[1]!, id: Number(m[2]) })
      }
      return value
    } catch (e) {
      if (e instanceof StateFileError && e.code === 'ENOENT') return null
      try {
        fs.rmSync(file, { force: true, recursive: true })
      } catch {
        // a read-only state dir: it stays, and is ignored the same way next time
      }
      return { damaged: e instanceof Error ? e.message : String(e) }
    }
  }

  /**
   * Write RESTORING with the plan, then keep it open to append each segment
   * created ({@link RestoringLog}). Only about this IPC namespace: no fsync
   * (see replaceFile); atomic for readers and across a SIGKILL.
   */
  startRestoring(record: RestoringRecord): RestoringLog {
    const file = this.path(RESTORING_FILE)
    // The checked JSON fills whole lines, so every appended line stays inside a page.
    replaceFile(file, encodeCheckedJson(FORMAT, { ...record, created: [] }, { alignTo: LINE }), { durable: false })
    const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW)
    let open = true
    return {
      created(key, id) {
        const line = `created ${key} ${id}`
        fs.writeSync(fd, line.padEnd(LINE - 1) + '\n')
      },
      close() {
        if (!open) return
        open = false
        fs.closeSync(fd)
      },
    }
  }

  clearRestoring(): void {
    fs.rmSync(this.path(RESTORING_FILE), { force: true })
  }
}

/** A file name from a metadata file must stay inside its generation directory. */
export function safeName(name: string): string {
  if (typeof name !== 'string' || !(/^[0-9a-f]{8}-\d+\.(meta|data)$/.test(name) || name === PACK_DATA)) {
    throw new StateFileError(name, 'is not a segment file name shmkeep writes')
  }
  return name
}

/** The real path a missing `abs` would have: its nearest existing ancestor resolved, the rest appended. */
function realPathOfMissing(abs: string): string {
  let dir = abs
  const rest: string[] = []
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) {
    rest.unshift(path.basename(dir))
    dir = path.dirname(dir)
  }
  return path.join(fs.realpathSync(dir), ...rest)
}
