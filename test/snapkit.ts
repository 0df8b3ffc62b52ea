/**
 * What the snapshot/restore test files share: a workspace (a temp folder with
 * a shell prelude) in which each test runs the operator's commands inside
 * `unshare --ipc sh -c '...'` (a fresh IPC namespace per call, never the
 * machine's own), and readers for what the operator sees: exit codes,
 * stdout/stderr, --json reports, /proc/sysvipc/shm and the bytes the app
 * reads (checkseg's hashes).
 *
 * In the scripts:
 *   shmkeep ARGS...         node bin/shmkeep.js ARGS... (of a copy of the package made when the file starts)
 *   mkseg ARGS...           test/fixtures/mkseg.c (a legacy app creating one segment)
 *   checkseg ARGS...        test/fixtures/checkseg.c
 *   shmpeer ARGS...         test/fixtures/shmpeer.c
 *   step NAME CMD...        run CMD, keep its stdout, stderr and exit code as NAME
 *   shmdump NAME            keep /proc/sysvipc/shm as NAME (before reading any byte: rss)
 *   sums NAME               keep `checkseg all` (key, id, size, hash of every segment) as NAME
 *   docker CMD...           CMD with exactly Docker's default capabilities
 *   inns 'SCRIPT'           SCRIPT in a new IPC namespace of its own (nested), with this prelude
 *   $W                      the workspace folder
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { binDir, root } from './helpers'

export const shmkeepBin = path.join(root, 'bin', 'shmkeep.js')

/**
 * A copy of the built package (bin/, dist/, the addon, package.json) as it is
 * when the test file starts — test/run.mjs has just run tsc — so that a
 * rebuild of dist/ while the file runs cannot mix two builds within one test.
 * It lives under the package (test/.tmp/) so that node_modules resolve.
 */
function freezePackage(name: string): string {
  const dir = path.join(root, 'test', '.tmp', `pkg-${name}`)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  for (const part of ['bin', 'dist', 'package.json', 'prebuilds', path.join('build', 'Release', 'shmkeep.node')]) {
    const from = path.join(root, part)
    if (!fs.existsSync(from)) continue
    fs.mkdirSync(path.dirname(path.join(dir, part)), { recursive: true })
    fs.cpSync(from, path.join(dir, part), { recursive: true })
  }
  return dir
}

/** Docker's default capability set (moby's oci/caps/defaults.go), as setpriv's --bounding-set. */
export const DOCKER_BOUNDING =
  '-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap'

/** Tests that create segments as uid 1000 need real root (not `unshare -U -r`, where only uid 0 is mapped). */
export const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0

export function have(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0
}

const PRELUDE = String.raw`
shmkeep() { "$SK_NODE" "$SK_BIN" "$@"; }
mkseg() { "$SK_FIX/mkseg" "$@" >/dev/null || echo "mkseg $* failed" >>"$W/.errors"; }
checkseg() { "$SK_FIX/checkseg" "$@"; }
shmpeer() { "$SK_FIX/shmpeer" "$@"; }
step() { _n=$1; shift; "$@" >"$W/$_n.out" 2>"$W/$_n.err"; echo $? >"$W/$_n.rc"; }
shmdump() { cat /proc/sysvipc/shm >"$W/$1.shm"; }
sums() { "$SK_FIX/checkseg" all >"$W/$1.sums" 2>>"$W/.errors"; }
docker() { setpriv --bounding-set="$SK_DOCKER" --inh-caps=-all "$@"; }
inns() { unshare --ipc sh -c ". \"$SK_PRELUDE\"; $1"; }
`

/** One line of /proc/sysvipc/shm. */
export interface ShmLine {
  key: number
  id: number
  perms: number
  mode: number
  size: number
  cpid: number
  lpid: number
  nattch: number
  uid: number
  gid: number
  cuid: number
  cgid: number
  rss: number
  swap: number
}

export function parseShm(text: string): ShmLine[] {
  const lines = text.trim().split('\n')
  const head = (lines.shift() ?? '').trim().split(/\s+/)
  return lines
    .filter((l) => l.trim())
    .map((l) => {
      const f = l.trim().split(/\s+/)
      const v = (name: string) => f[head.indexOf(name)]!
      const perms = parseInt(v('perms'), 8)
      return {
        key: Number(v('key')) >>> 0,
        id: Number(v('shmid')),
        perms,
        mode: perms & 0o777,
        size: Number(v('size')),
        cpid: Number(v('cpid')),
        lpid: Number(v('lpid')),
        nattch: Number(v('nattch')),
        uid: Number(v('uid')),
        gid: Number(v('gid')),
        cuid: Number(v('cuid')),
        cgid: Number(v('cgid')),
        rss: Number(v('rss')),
        swap: Number(v('swap')),
      }
    })
}

/** What must come back exactly: key, size, mode & 0777, uid, gid, cuid, cgid (and the id, unless told). */
export function identity(s: ShmLine, withId = true) {
  const { key, size, mode, uid, gid, cuid, cgid } = s
  return withId ? { key, id: s.id, size, mode, uid, gid, cuid, cgid } : { key, size, mode, uid, gid, cuid, cgid }
}

/** Sorted for comparison (by key, then id). */
export function sorted<T extends { key: number | string; id?: number }>(list: T[]): T[] {
  return [...list].sort((a, b) => (a.key === b.key ? (a.id ?? 0) - (b.id ?? 0) : String(a.key) < String(b.key) ? -1 : 1))
}

/** One line of `checkseg all`: what the app would read. */
export interface SumLine {
  key: string
  id: number
  size: number
  hash: string
}

export function parseSums(text: string): SumLine[] {
  return text
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [key, id, size, hash] = l.trim().split(/\s+/)
      return { key: key!, id: Number(id), size: Number(size), hash: hash! }
    })
}

/** Sums without ids, sorted by key then hash: "the same segments with the same bytes". */
export function contents(sums: SumLine[]): string[] {
  return sums.map((s) => `${s.key} ${s.size} ${s.hash}`).sort()
}

export interface Step {
  rc: number
  out: string
  err: string
  /** stdout parsed as JSON (the --json report), undefined when it is not JSON. */
  json: any
}

export interface NsResult {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** A temp folder with the prelude; state dirs go in it (fs.mkdtempSync under os.tmpdir()). */
export class Workspace {
  readonly dir: string
  readonly prelude: string
  /** The frozen copy of the package whose bin/shmkeep.js the scripts run. */
  readonly pkg: string
  private scripts = 0

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-snap-'))
    this.prelude = path.join(this.dir, '.prelude.sh')
    fs.writeFileSync(this.prelude, PRELUDE)
    this.pkg = freezePackage(path.basename(this.dir))
  }

  /** A path for a state dir in the workspace (not created: shmkeep creates it). */
  state(name = 'state'): string {
    return path.join(this.dir, name)
  }

  env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
    return {
      ...process.env,
      W: this.dir,
      SK_NODE: process.execPath,
      SK_BIN: path.join(this.pkg, 'bin', 'shmkeep.js'),
      SK_FIX: binDir,
      SK_DOCKER: DOCKER_BOUNDING,
      SK_PRELUDE: this.prelude,
      ...extra,
    }
  }

  /**
   * Run `script` in a new IPC namespace (`unshare --ipc sh -c`), with the
   * prelude; `flags` adds namespaces (e.g. ['--mount']). Throws when a
   * fixture failed (a test must not go on with segments it did not get).
   */
  ns(script: string, { flags = [] as string[], env = {} as NodeJS.ProcessEnv, timeout = 200_000 } = {}): NsResult {
    fs.rmSync(path.join(this.dir, '.errors'), { force: true })
    const options: SpawnSyncOptions = { encoding: 'utf8', env: this.env(env), timeout, maxBuffer: 64 << 20 }
    // The script goes in a file: a long one (hundreds of strace -P paths) is more than one argument may hold.
    const file = path.join(this.dir, `.script-${++this.scripts}.sh`)
    fs.writeFileSync(file, `. "$SK_PRELUDE"\n${script}\n`)
    const r = spawnSync('unshare', ['--ipc', ...flags, 'sh', file], options)
    const result = { status: r.status, signal: r.signal, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : '') }
    const errors = this.read('.errors')
    if (errors) throw new Error(`a fixture failed: ${errors}\nstderr: ${result.stderr}`)
    if (r.error) throw r.error
    return result
  }

  read(name: string): string | undefined {
    try {
      return fs.readFileSync(path.join(this.dir, name), 'utf8')
    } catch {
      return undefined
    }
  }

  /** What `step NAME ...` kept. */
  step(name: string): Step {
    const rcText = this.read(`${name}.rc`)
    if (rcText === undefined) throw new Error(`step ${name} did not run`)
    const out = this.read(`${name}.out`) ?? ''
    let json: any
    try {
      json = JSON.parse(out)
    } catch {
      json = undefined
    }
    return { rc: Number(rcText.trim()), out, err: this.read(`${name}.err`) ?? '', json }
  }

  shm(name: string): ShmLine[] {
    const text = this.read(`${name}.shm`)
    if (text === undefined) throw new Error(`no shmdump ${name}`)
    return parseShm(text)
  }

  sums(name: string): SumLine[] {
    const text = this.read(`${name}.sums`)
    if (text === undefined) throw new Error(`no sums ${name}`)
    return parseSums(text)
  }

  cleanup(): void {
    fs.rmSync(this.dir, { recursive: true, force: true })
    fs.rmSync(this.pkg, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------------------
// The state dir's files, read and damaged as an operator (or a bad disk) would.

const CRC_TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

/** CRC-32C (Castagnoli), written here independently of the addon. */
export function crc32c(data: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}

const HEADER = /^shmkeep-json (\d+) crc32c=([0-9a-f]{8}) length=(\d+)\n/

/** A checked JSON file (GENERATION, .meta, LIVE): its header and its JSON. */
export function readChecked(file: string): { format: number; crc: string; length: number; body: Buffer; value: any } {
  const data = fs.readFileSync(file)
  const nl = data.indexOf(10)
  const m = HEADER.exec(data.subarray(0, nl + 1).toString('latin1'))
  if (!m) throw new Error(`${file}: no header`)
  const body = data.subarray(nl + 1)
  return { format: Number(m[1]), crc: m[2]!, length: Number(m[3]), body, value: JSON.parse(body.toString('utf8')) }
}

/** Write a checked JSON file with a correct CRC (to forge a consistent but different file). */
export function writeChecked(file: string, value: unknown, format = 1): void {
  const body = Buffer.from(JSON.stringify(value, null, 1) + '\n')
  const header = `shmkeep-json ${format} crc32c=${crc32c(body).toString(16).padStart(8, '0')} length=${body.length}\n`
  fs.writeFileSync(file, Buffer.concat([Buffer.from(header), body]))
}

/**
 * Where a saved segment's byte `at` lies on disk: its own .data file, or its
 * place in pack.data (a small segment: its record in GENERATION says where).
 */
export function savedByte(stateDir: string, gen: string, key: string, at = 0): { file: string; offset: number } {
  const g = readChecked(path.join(stateDir, gen, 'GENERATION')).value
  const entry = g.segments.find((s: any) => s.key === key)
  if (!entry) throw new Error(`${gen} has no segment ${key}`)
  return { file: path.join(stateDir, gen, entry.data), offset: (entry.packed?.offset ?? 0) + at }
}

/** Flip every bit of one byte of a file in place. */
export function flipByte(file: string, offset: number): void {
  const fd = fs.openSync(file, 'r+')
  try {
    const b = Buffer.alloc(1)
    fs.readSync(fd, b, 0, 1, offset)
    b[0] = b[0]! ^ 0xff
    fs.writeSync(fd, b, 0, 1, offset)
  } finally {
    fs.closeSync(fd)
  }
}

/** Entries of a directory that are shmkeep's temporaries. */
export function temporaries(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => n.startsWith('.tmp-') || n.endsWith('.tmp'))
}

export function genName(seq: number): string {
  return `gen-${String(seq).padStart(12, '0')}`
}

export function currentOf(stateDir: string): string {
  return fs.readFileSync(path.join(stateDir, 'CURRENT'), 'utf8')
}

/** No stack trace, no "TypeError", no signal: what "no crash" looks like to the operator. */
export function noCrash(s: Step): void {
  if (/^\s+at .+\(.*:\d+:\d+\)$/m.test(s.err) || /\b(TypeError|ReferenceError|RangeError|SyntaxError)\b/.test(s.err) || s.rc > 5) {
    throw new Error(`crashed (rc ${s.rc}): ${s.err}`)
  }
}
