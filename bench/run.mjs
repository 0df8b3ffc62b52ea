#!/usr/bin/env node
// `npm run bench`: shmkeep against plain C and the disk's own ceiling, on
// this machine, in one run. Prints one table (Markdown) on stdout, progress
// on stderr, and writes every sample to bench/results.json.
//
// Like `npm test`, it re-executes itself in a private IPC namespace
// (`unshare --ipc` as root, else `unshare -U -r --ipc`): the machine's own
// segments are never seen, and the segments it makes die with it.
//
// Figures (docs/BENCHMARKS.md explains each, and the targets):
//   1 durable snapshot          library snapshot({stateDir, keep: 1}) in a fresh Node process
//   2 baselines                 C write()+fsync+rename; O_DIRECT write/read (the disk);
//                               naive Node (shm.attach + fs.writeFileSync + fsync)
//   3 restore, cold, verified   restore({stateDir}) in a fresh IPC namespace; C read() into a new segment
//   4 verify, cold              verify(stateDir); C read() of the file
//   5 peak RSS                  VmHWM of the snapshot and restore processes (largest size)
//   6 unchanged checkpoint      a second snapshot of an unchanged 1 GiB segment (an app attached),
//                               and one with every 100th chunk changed (~1 %)
//   7 freeze pause              `shmkeep run --checkpoint-interval 0.5 --freeze=sigstop` pauseMs
//                               against checksumming the resident segment + copying what changed
//   8 start-up                  `shmkeep run -- /bin/true` against `node -e 0` and `tini -- /bin/true`
//   9 many small segments       2000 segments of 4 KiB: snapshot, unchanged re-snapshot, restore,
//                               against the same of one segment of the same 8000 KiB
//  10 semaphore sets, queues    500 sets of 4 and 200 queues of 100 messages of 100 bytes: snapshot,
//                               restore, against the same of one semaphore set
//  11 abort                     a checkpoint (page-cache writes) of 2 GiB in 4 segments aborted by SIGTERM 0.3 s in: ms from
//                               the signal until snapshot() settled and its temporary generation is gone
//
// Every number compares only with numbers of the same run: the machine this
// was written on is shared and varies up to 3x from one run to the next.
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, '..')
const MiB = 2 ** 20
const GiB = 2 ** 30
const CHUNK = 4 * MiB

const HELP = `Usage: npm run bench -- [options]

  --runs N        runs per figure (default 5; start-up: max(10, 2 N))
  --quick         64 MiB only, 3 runs (a smoke test, ~1 minute)
  --large         also 4 GiB (when MemAvailable and the disk allow it)
  --report-only   exit 0 even when a target is missed by more than 2x
  --dir PATH      where the state dirs go (default: os.tmpdir() when it is a
                  disk file system, else bench/.tmp); must not be tmpfs
  --only LIST     some of: startup,copy,unchanged,freeze,small,ipc,abort (default all)
  --table FILE    print the table of a saved results.json again (measures nothing)

Prints one table; writes bench/results.json. Exit status 1 when a target is
missed by more than 2x or a measurement failed (unless --report-only).`

let opts
try {
  opts = parseArgs({
    options: {
      runs: { type: 'string' },
      quick: { type: 'boolean' },
      large: { type: 'boolean' },
      'report-only': { type: 'boolean' },
      dir: { type: 'string' },
      only: { type: 'string' },
      table: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values
} catch (e) {
  console.error(`bench: ${e.message}\n\n${HELP}`)
  process.exit(2)
}
if (opts.help) {
  console.log(HELP)
  process.exit(0)
}

// ---------------------------------------------------------------------------
// A private IPC namespace, as test/run.mjs does.
if (process.env.SHMKEEP_BENCH_NS === undefined && opts.table === undefined) {
  const ways = process.getuid() === 0 ? [['--ipc'], ['-U', '-r', '--ipc']] : [['-U', '-r', '--ipc']]
  for (const flags of ways) {
    if (spawnSync('unshare', [...flags, 'true'], { stdio: 'ignore' }).status !== 0) continue
    console.error(`bench: running in a private IPC namespace (unshare ${flags.join(' ')})`)
    const r = spawnSync('unshare', [...flags, process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, SHMKEEP_BENCH_NS: flags.join(' ') },
    })
    process.exit(r.status ?? 1)
  }
  console.error('bench: cannot make a private IPC namespace (neither `unshare --ipc` as root nor `unshare -U -r --ipc` works here);')
  console.error("refusing to create segments in this machine's own namespace.")
  process.exit(1)
}

const runs = opts.runs !== undefined ? Number(opts.runs) : opts.quick ? 3 : 5
if (!Number.isInteger(runs) || runs < 1) {
  console.error('bench: --runs must be a positive integer')
  process.exit(2)
}
const groups = new Set((opts.only ?? 'startup,copy,unchanged,freeze,small,ipc,abort').split(',').map((s) => s.trim()))
for (const g of groups) {
  if (!['startup', 'copy', 'unchanged', 'freeze', 'small', 'ipc', 'abort'].includes(g)) {
    console.error(`bench: --only takes startup, copy, unchanged, freeze, small, ipc, abort; not ${g}`)
    process.exit(2)
  }
}

// Children see no SHMKEEP_* settings of the caller's (the CLI reads them as options).
const childEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHMKEEP_') || k === 'SHMKEEP_BENCH_NS'))
const CONTAINER = ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child']
const started = Date.now()

function log(msg) {
  process.stderr.write(`bench: ${msg}\n`)
}

// ---------------------------------------------------------------------------
// Processes.

const children = new Set()
let workDir
function cleanup() {
  for (const c of children) {
    try {
      c.kill('SIGKILL')
    } catch {
      // gone
    }
  }
  if (workDir) fs.rmSync(workDir, { recursive: true, force: true })
}
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    cleanup()
    process.exit(130)
  })
}

function run(cmd, args, o = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, timeout: o.timeout ?? 20 * 60e3, env: childEnv, cwd: root, ...o })
}

/** Run a command that prints one JSON line last; throw with its stderr when it fails. */
function json(cmd, args, o) {
  const r = run(cmd, args, o)
  const line = (r.stdout ?? '').trim().split('\n').pop()
  let v
  try {
    v = JSON.parse(line)
  } catch {
    // below
  }
  if (r.status !== 0 || !v || v.error) {
    const why = v?.error ? `${v.code ? `${v.code}: ` : ''}${v.error}`.slice(0, 120) : ((r.stderr ?? '').trim().split('\n').slice(-3).join(' | ') || r.error?.message || `status ${r.status ?? r.signal}`)
    throw new Error(`${path.basename(cmd)} ${args.map((a) => path.basename(String(a))).join(' ')}: ${why}`)
  }
  return v
}

const sync = () => run('sync', [])
const du = (dir) => Number(run('du', ['-s', '--block-size=1', dir]).stdout.split(/\s/)[0])

function filesUnder(dir) {
  if (!fs.existsSync(dir)) return []
  return fs
    .readdirSync(dir, { recursive: true })
    .map((f) => path.join(dir, f))
    .filter((f) => fs.lstatSync(f).isFile())
}

// ---------------------------------------------------------------------------
// Samples: S[name] = numbers; errors[name] = why a measurement failed.

const S = {}
const errors = {}
const notes = []
const add = (name, v) => (S[name] ??= []).push(v)
function attempt(name, fn) {
  try {
    return fn()
  } catch (e) {
    errors[name] ??= e.message
    log(`  ${name} failed: ${e.message}`)
    return undefined
  }
}

function stats(xs) {
  if (!xs?.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return { med: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2, min: s[0], max: s[s.length - 1], n: s.length }
}

const rotate = (xs, k) => xs.map((_, i) => xs[(i + k) % xs.length])
const sizeName = (b) => (b >= GiB ? `${b / GiB} GiB` : `${b / MiB} MiB`)

// ---------------------------------------------------------------------------
// The machine, the package, the work dir.

function machine(dir) {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8')
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8')
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024
  const df = run('df', ['--output=source,fstype', dir]).stdout.trim().split('\n').pop()?.trim().split(/\s+/) ?? []
  // /sys/class/block/<partition>/.. is its disk; a device we cannot place stays unknown.
  let rotational
  try {
    const dev = fs.realpathSync(df[0])
    const sys = fs.realpathSync(`/sys/class/block/${path.basename(dev)}`)
    const disk = fs.existsSync(path.join(sys, 'partition')) ? path.dirname(sys) : sys
    rotational = fs.readFileSync(path.join(disk, 'queue', 'rotational'), 'utf8').trim()
  } catch {
    // not a block device (overlay, tmpfs, a network file system)
  }
  return {
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memTotal: kb('MemTotal'),
    memAvailable: kb('MemAvailable'),
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    fsType: run('stat', ['-f', '-c', '%T', dir]).stdout.trim(),
    device: df[0],
    mountType: df[1],
    rotational: rotational === undefined ? undefined : rotational === '1',
    loadavg: os.loadavg(),
  }
}

const DISK_FS = new Set(['ext2/ext3', 'xfs', 'btrfs', 'f2fs', 'zfs', 'bcachefs', 'jfs', 'reiserfs', 'nilfs2'])
const fsType = (dir) => run('stat', ['-f', '-c', '%T', dir]).stdout.trim()

function pickBase() {
  if (opts.dir) {
    fs.mkdirSync(opts.dir, { recursive: true })
    const t = fsType(opts.dir)
    if (!DISK_FS.has(t)) notes.push(`--dir ${opts.dir} is ${t}, not a disk file system: write and read figures do not measure a disk`)
    return path.resolve(opts.dir)
  }
  for (const dir of [os.tmpdir(), path.join(here, '.tmp')]) {
    fs.mkdirSync(dir, { recursive: true })
    if (DISK_FS.has(fsType(dir))) return dir
  }
  const dir = path.join(here, '.tmp')
  notes.push(`neither ${os.tmpdir()} nor ${dir} is on a disk file system (${fsType(dir)}): give --dir`)
  return dir
}

/** A digest of what the children load (dist/ and the addon): another build during the run would mix versions. */
function packageDigest() {
  const h = createHash('sha256')
  const files = [...filesUnder(path.join(root, 'dist')).filter((f) => f.endsWith('.js')), ...filesUnder(path.join(root, 'build', 'Release')).filter((f) => f.endsWith('.node'))].sort()
  for (const f of files) {
    h.update(f)
    try {
      h.update(fs.readFileSync(f))
    } catch {
      // removed meanwhile
    }
  }
  return h.digest('hex').slice(0, 16)
}

/** dist/ must be current: rebuild it (tsc) when a src/ file is newer than its output. */
function freshDist() {
  const stale = []
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
        const js = path.join(root, 'dist', path.relative(path.join(root, 'src'), p)).replace(/\.ts$/, '.js')
        if (!fs.existsSync(js) || fs.statSync(js).mtimeMs < fs.statSync(p).mtimeMs) stale.push(path.relative(root, p))
      }
    }
  }
  walk(path.join(root, 'src'))
  if (!stale.length) return
  log(`dist/ is older than ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', …' : ''}: building (tsc)`)
  const r = run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status !== 0) notes.push(`tsc failed (src/ is being edited?): measured the dist/ that was there`)
}

// ---------------------------------------------------------------------------

let BASELINE
const BIN = path.join(root, 'bin', 'shmkeep.js')
const CHILD = path.join(here, 'child.mjs')
const node = (args, o) => json(process.execPath, [CHILD, ...args], o)

/** Drop every file under these paths from the page cache; returns the pages still cached. */
function evict(...dirs) {
  const files = dirs.flatMap((d) => (fs.existsSync(d) && fs.statSync(d).isFile() ? [d] : filesUnder(d)))
  if (!files.length) return 0
  const r = json(BASELINE, ['evict', ...files])
  if (r.resident) notes.push(`page cache: ${r.resident} of ${r.pages} pages stayed cached after posix_fadvise(DONTNEED)`)
  return r.resident
}

function dataFile(stateDir) {
  return filesUnder(stateDir).find((f) => f.endsWith('.data'))
}

// Figure 8: start-up. Runs first, while this namespace holds no segment (the
// final snapshot of `shmkeep run -- /bin/true` then saves nothing).
function startup() {
  const n = Math.max(10, 2 * runs)
  const tini = ['/usr/bin/tini', '/sbin/tini', '/usr/local/bin/tini'].find((p) => fs.existsSync(p)) ?? (run('sh', ['-c', 'command -v tini']).stdout.trim() || undefined)
  if (!tini) notes.push('tini is not installed (Debian: apt-get install tini): its start-up is not measured')
  let k = 0
  const cmds = {
    run: () => {
      const dir = path.join(workDir, 'startup', String(k++))
      fs.mkdirSync(dir, { recursive: true })
      return [[process.execPath, BIN, 'run', '--state-dir', dir, '--', '/bin/true'], () => fs.rmSync(dir, { recursive: true, force: true })]
    },
    node: () => [[process.execPath, '-e', '0']],
    ...(tini ? { tini: () => [[tini, '--', '/bin/true']] } : {}),
  }
  log(`start-up: ${Object.keys(cmds).join(', ')}, bare and in unshare ${CONTAINER.join(' ')}, ${n} runs each`)
  for (let i = -1; i < n; i++) {
    for (const mode of ['bare', 'container']) {
      for (const [name, make] of rotate(Object.entries(cmds), Math.max(0, i))) {
        const [argv, after] = make()
        const [cmd, ...args] = mode === 'container' ? ['unshare', ...CONTAINER, ...argv] : argv
        const t0 = process.hrtime.bigint()
        const r = spawnSync(cmd, args, { stdio: 'ignore', env: childEnv, timeout: 60e3 })
        const s = Number(process.hrtime.bigint() - t0) / 1e9
        after?.()
        if (r.status !== 0) errors[`startup.${name}.${mode}`] ??= `${argv.join(' ')} exited with ${r.status ?? r.signal}`
        else if (i >= 0) add(`startup.${name}.${mode}`, s)
      }
    }
  }
}

// Figures 1-5 for one segment.
function copyFigures(seg) {
  const { id, key, size } = seg
  const tag = sizeName(size)
  const d = path.join(workDir, 'copy')
  const state = path.join(d, 'state')
  const cdir = path.join(d, 'c')
  const ndir = path.join(d, 'naive')
  const direct = path.join(d, 'direct')
  fs.mkdirSync(d, { recursive: true })
  let naiveFailed = false
  for (let r = 0; r < runs; r++) {
    log(`${tag}: run ${r + 1}/${runs}`)
    // Writes, in a rotating order.
    for (const v of rotate(['c', 'shmkeep', 'naive', 'disk'], r)) {
      for (const p of [cdir, ndir, direct]) fs.rmSync(p, { recursive: true, force: true })
      if (v === 'shmkeep') fs.rmSync(state, { recursive: true, force: true })
      sync()
      if (v === 'c') {
        fs.mkdirSync(cdir)
        attempt(`snap.c.${size}`, () => add(`snap.c.${size}`, json(BASELINE, ['snap', id, cdir, 'seg.data']).ns / 1e9))
      } else if (v === 'shmkeep') {
        attempt(`snap.shmkeep.${size}`, () => {
          const o = node(['snapshot', state, key, '1', 'manual'])
          if (o.bytes !== size) throw new Error(`snapshot saved ${o.bytes} bytes, not ${size}`)
          add(`snap.shmkeep.${size}`, o.ms / 1e3)
          add(`rss.snapshot.${size}`, o.peakRss)
        })
      } else if (v === 'naive' && !naiveFailed) {
        fs.mkdirSync(ndir)
        const o = attempt(`snap.naive.${size}`, () => json(process.execPath, [CHILD, 'naive', id, ndir, 'seg.data']))
        if (o) {
          add(`snap.naive.${size}`, o.ms / 1e3)
          add(`rss.naive.${size}`, o.peakRss)
        }
        // An error is printed as {error}: json() threw it; a failure is a result here.
        if (errors[`snap.naive.${size}`]) {
          naiveFailed = true
          S[`snap.naive.${size}.fails`] = [1]
        }
      } else if (v === 'disk') {
        fs.mkdirSync(direct)
        const f = path.join(direct, 'direct')
        attempt(`disk.write.${size}`, () => add(`disk.write.${size}`, json(BASELINE, ['dwrite', f, size]).ns / 1e9))
        attempt(`disk.read.${size}`, () => add(`disk.read.${size}`, json(BASELINE, ['dread', f]).ns / 1e9))
      }
    }
    for (const p of [cdir, ndir, direct]) fs.rmSync(p, { recursive: true, force: true })
    // Reads, cold: the state files leave the page cache before each.
    const data = dataFile(state)
    if (!data) continue
    sync()
    for (const v of rotate(['restore', 'crestore', 'verify', 'cread'], r)) {
      evict(state)
      if (v === 'restore') {
        attempt(`restore.shmkeep.${size}`, () => {
          const o = json('unshare', ['--ipc', process.execPath, CHILD, 'restore', state])
          if (o.bytes !== size) throw new Error(`restored ${o.bytes} bytes, not ${size}`)
          add(`restore.shmkeep.${size}`, o.ms / 1e3)
          add(`rss.restore.${size}`, o.peakRss)
        })
      } else if (v === 'crestore') {
        attempt(`restore.c.${size}`, () => add(`restore.c.${size}`, json(BASELINE, ['restore', data]).ns / 1e9))
      } else if (v === 'verify') {
        attempt(`verify.shmkeep.${size}`, () => {
          const o = node(['verify', state])
          if (!o.ok) throw new Error('verify found damage')
          add(`verify.shmkeep.${size}`, o.ms / 1e3)
        })
      } else {
        attempt(`verify.c.${size}`, () => add(`verify.c.${size}`, json(BASELINE, ['read', data]).ns / 1e9))
      }
    }
  }
  fs.rmSync(d, { recursive: true, force: true })
}

/** 9: 2000 segments of 4 KiB (packed into one pack.data), and one segment of the same bytes. */
const SMALL = { count: 2000, size: 4096, first: 0x5e110000, one: '0x5e11ffff' }
function smallFigures(lib) {
  const d = path.join(workDir, 'small')
  fs.mkdirSync(d, { recursive: true })
  for (let i = 0; i < SMALL.count; i++) {
    const b = lib.shm.attach(lib.shm.get(SMALL.first + i, { size: SMALL.size, create: true }))
    b.fill((i % 255) + 1)
    lib.shm.detach(b)
  }
  json(BASELINE, ['fill', SMALL.one, SMALL.count * SMALL.size, 9])
  const keys = { small: `0x${SMALL.first.toString(16)}-0x${(SMALL.first + SMALL.count - 1).toString(16)}`, one: SMALL.one }
  for (let r = 0; r < runs; r++) {
    log(`${SMALL.count} small segments: run ${r + 1}/${runs}`)
    for (const v of rotate(['small', 'one'], r)) {
      const state = path.join(d, v)
      fs.rmSync(state, { recursive: true, force: true })
      sync()
      attempt(`small.snap.${v}`, () => add(`small.snap.${v}`, node(['snapshot', state, keys[v], '1', 'manual']).ms / 1e3))
      attempt(`small.unchanged.${v}`, () => add(`small.unchanged.${v}`, node(['snapshot', state, keys[v], '1', 'manual']).ms / 1e3))
      attempt(`small.restore.${v}`, () => add(`small.restore.${v}`, json('unshare', ['--ipc', process.execPath, CHILD, 'restore', state]).ms / 1e3))
    }
  }
  fs.rmSync(d, { recursive: true, force: true })
}

/** 10: many semaphore sets and message queues (one packed objects.data), and one semaphore set. */
const IPC = { sets: 500, queues: 200, messages: 100, size: 100, firstSem: 0x5e120000, firstMsg: 0x5e130000 }
function ipcFigures(lib) {
  const d = path.join(workDir, 'ipc')
  fs.mkdirSync(d, { recursive: true })
  for (let i = 0; i < IPC.sets; i++) lib.sem.setValues(lib.sem.get(IPC.firstSem + i, { nsems: 4, create: true }), [1, 0, i % 100, 7])
  for (let i = 0; i < IPC.queues; i++) {
    const q = lib.msg.get(IPC.firstMsg + i, { create: true })
    for (let m = 0; m < IPC.messages; m++) lib.msg.send(q, m + 1, Buffer.alloc(IPC.size, m))
  }
  const hex = (n) => `0x${n.toString(16)}`
  const keys = { many: `${hex(IPC.firstSem)}-${hex(IPC.firstSem + IPC.sets - 1)},${hex(IPC.firstMsg)}-${hex(IPC.firstMsg + IPC.queues - 1)}`, one: hex(IPC.firstSem) }
  for (let r = 0; r < runs; r++) {
    log(`${IPC.sets} semaphore sets and ${IPC.queues} queues: run ${r + 1}/${runs}`)
    for (const v of rotate(['many', 'one'], r)) {
      const state = path.join(d, v)
      fs.rmSync(state, { recursive: true, force: true })
      sync()
      attempt(`ipc.snap.${v}`, () => add(`ipc.snap.${v}`, node(['snapshot', state, keys[v], '1', 'manual']).ms / 1e3))
      attempt(`ipc.restore.${v}`, () => add(`ipc.restore.${v}`, json('unshare', ['--ipc', process.execPath, CHILD, 'restore', state]).ms / 1e3))
    }
  }
  for (const s of lib.sem.list()) if (s.key >>> 16 === IPC.firstSem >>> 16) lib.sem.remove(s.id)
  for (const q of lib.msg.list()) if (q.key >>> 16 === IPC.firstMsg >>> 16) lib.msg.remove(q.id)
  fs.rmSync(d, { recursive: true, force: true })
}

function waitLine(child, test, ms) {
  return new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout })
    const t = setTimeout(() => reject(new Error('timed out')), ms)
    rl.on('line', (l) => {
      if (test(l)) {
        clearTimeout(t)
        resolve(l)
      }
    })
    child.on('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
}

// Figure 6: a second snapshot of a segment that did not change, an app attached.
async function unchangedCheckpoint(seg) {
  const { id, key, size } = seg
  const dir = path.join(workDir, 'unchanged')
  const hold = spawn(BASELINE, ['hold', String(id)], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.add(hold)
  try {
    await waitLine(hold, (l) => l.includes('ready'), 10e3)
    for (let r = 0; r < runs; r++) {
      log(`unchanged checkpoint, ${sizeName(size)}: run ${r + 1}/${runs}`)
      fs.rmSync(dir, { recursive: true, force: true })
      sync()
      const ok = attempt(`unchanged.${size}`, () => {
        const first = node(['snapshot', dir, key, '0', 'manual'])
        add(`unchanged.first.${size}`, first.ms / 1e3)
        sync()
        // The first checkpoint that links the file also gives the generation
        // before it a copy of its own (the independent fallback, once); the
        // later ones do not: that steady state is the figure.
        const firstLink = node(['snapshot', dir, key, '0', 'checkpoint'])
        add(`unchanged.firstlink.${size}`, firstLink.ms / 1e3)
        sync()
        let before = du(dir)
        const same = node(['snapshot', dir, key, '0', 'checkpoint'])
        let after = du(dir)
        add(`unchanged.same.${size}`, same.ms / 1e3)
        add(`unchanged.same.written.${size}`, same.bytesWritten)
        add(`unchanged.same.du.${size}`, after - before)
        S[`unchanged.pct.touched.${size}`] = [json(BASELINE, ['touch', id, CHUNK, 100]).touched]
        sync()
        before = du(dir)
        const pct = node(['snapshot', dir, key, '0', 'checkpoint'])
        after = du(dir)
        add(`unchanged.pct.${size}`, pct.ms / 1e3)
        add(`unchanged.pct.written.${size}`, pct.bytesWritten)
        add(`unchanged.pct.du.${size}`, after - before)
        return true
      })
      if (!ok) break
    }
  } catch (e) {
    errors[`unchanged.${size}`] ??= `the attached app: ${e.message}`
  } finally {
    hold.kill('SIGTERM')
    children.delete(hold)
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

// Figure 7: the pause of periodic checkpoints of a running app.
async function freezePause(seg, index) {
  const { size } = seg
  const tag = sizeName(size)
  const dir = path.join(workDir, `checkpoints-${index}`)
  // run never creates its state dir (it stands for a mounted volume).
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const appKey = `0x5eed01${String(index).padStart(2, '0')}`
  const want = runs
  const timeoutMs = 30e3 + want * Math.max(3e3, (size / GiB) * 15e3)
  log(`freeze pause, ${tag}: shmkeep run --checkpoint-interval 0.5 --freeze=sigstop, ${want} checkpoints after the app filled its segment`)
  const c = spawn('unshare', [...CONTAINER, process.execPath, BIN, 'run', '--state-dir', dir, '--checkpoint-interval', '0.5', '--freeze=sigstop', '--log-format=json', '--', BASELINE, 'app', appKey, String(size), String(CHUNK), '100'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: childEnv,
  })
  children.add(c)
  let readyAt
  const got = []
  const other = []
  await new Promise((resolve) => {
    const t = setTimeout(resolve, timeoutMs)
    readline.createInterface({ input: c.stdout }).on('line', (l) => {
      if (l.includes('"ready"')) readyAt = Date.now()
    })
    readline.createInterface({ input: c.stderr }).on('line', (l) => {
      let e
      try {
        e = JSON.parse(l)
      } catch {
        return
      }
      if (e.event === 'checkpoint') {
        // Only checkpoints that began once the app had filled its segment.
        if (readyAt !== undefined && Date.parse(e.time) - e.ms > readyAt) got.push(e)
        if (got.length >= want) {
          clearTimeout(t)
          resolve()
        }
      } else if (/^checkpoint\./.test(e.event) || e.level === 'error') other.push(`${e.event}: ${e.msg}`)
    })
    c.on('exit', () => {
      clearTimeout(t)
      resolve()
    })
  })
  c.kill('SIGKILL') // --kill-child takes shmkeep, the app and the namespace with it
  await new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.on('exit', r)))
  children.delete(c)
  for (const e of got) {
    add(`pause.shmkeep.${size}`, e.pauseMs / 1e3)
    add(`pause.checkpoint.${size}`, e.ms / 1e3)
  }
  if (other.length) notes.push(`freeze pause, ${tag}: ${[...new Set(other)].slice(0, 3).join('; ')}`)
  if (got.length < want) errors[`pause.shmkeep.${size}`] ??= `${got.length} of ${want} checkpoints within ${Math.round(timeoutMs / 1e3)} s${other.length ? ` (${other[0]})` : ''}`
  fs.rmSync(dir, { recursive: true, force: true })
  // The floor, same run: checksum the resident segment, write() the chunks the app dirties.
  const out = path.join(workDir, 'resident.out')
  for (let r = 0; r < runs; r++) {
    fs.rmSync(out, { force: true })
    sync()
    attempt(`pause.c.${size}`, () => {
      const o = json(BASELINE, ['resident', seg.id, out, CHUNK, 100])
      add(`pause.c.${size}`, o.ns / 1e9)
      S[`pause.c.written.${size}`] = [o.written]
    })
  }
  fs.rmSync(out, { force: true })
}

// ---------------------------------------------------------------------------
// The table.

const GB = 1e9
const fmtRate = (st) => `${(st.med / GB).toFixed(2)} GB/s (${(st.min / GB).toFixed(2)}–${(st.max / GB).toFixed(2)})`
const fmtMs = (st) => `${st.med < 0.1 ? (st.med * 1e3).toFixed(1) : Math.round(st.med * 1e3)} ms (${fmtShortMs(st.min)}–${fmtShortMs(st.max)})`
const fmtShortMs = (s) => (s < 0.1 ? (s * 1e3).toFixed(1) : String(Math.round(s * 1e3)))
const fmtMiB = (b) => `${(b / MiB).toFixed(b < 10 * MiB ? 1 : 0)} MiB`
const fmtFaster = (x) => (x >= 1 ? `${fmtX(x)} faster` : `${fmtX(1 / x)} slower`)
const fmtX = (x) => (x === undefined || !Number.isFinite(x) ? '—' : `${x >= 100 ? Math.round(x) : x.toFixed(2)}×`)
const rates = (name, bytes) => stats(S[name]?.map((s) => bytes / s))

function buildRows(sizes) {
  const rows = []
  const row = (r) => rows.push({ baseline: '—', ratio: '—', target: '—', result: '—', ...r })
  // higher is better: value / need; lower is better: limit / value. "off" is how far from the target.
  const judge = (ok, off) => ({ result: ok ? 'pass' : 'MISS', off: ok ? 1 : off })
  const failed = (name) => errors[name] ?? 'no sample'
  // "node child.mjs naive …: ERR_OUT_OF_RANGE: The value of "length" is out of range…" → the code, and what it means
  const naiveFailure = (size) => {
    const e = errors[`snap.naive.${size}`] ?? ''
    const code = /\b(ERR_[A-Z_]+|E[A-Z]{2,})\b/.exec(e)?.[1]
    if (code === 'ERR_OUT_OF_RANGE') return 'fails: ERR_OUT_OF_RANGE (fs.writeFileSync: one write() of more than 2 GiB - 1)'
    return `fails: ${code ?? e.slice(0, 80)}`
  }

  for (const size of sizes) {
    const size_ = sizeName(size)
    const shm = rates(`snap.shmkeep.${size}`, size)
    const c = rates(`snap.c.${size}`, size)
    const dw = rates(`disk.write.${size}`, size)
    const dr = rates(`disk.read.${size}`, size)
    const naive = rates(`snap.naive.${size}`, size)
    if (!shm) {
      if (errors[`snap.shmkeep.${size}`]) row({ fig: 1, what: 'durable snapshot', size: size_, value: `error: ${failed(`snap.shmkeep.${size}`)}`, result: 'ERROR', off: Infinity })
    } else {
      const need = c && dw ? Math.min(1.2 * c.med, 0.8 * dw.med) : undefined
      row({
        fig: 1,
        what: 'durable snapshot vs C write()+fsync',
        size: size_,
        value: fmtRate(shm),
        baseline: c ? fmtRate(c) : `error: ${failed(`snap.c.${size}`)}`,
        ratio: c ? fmtX(shm.med / c.med) : '—',
        target: need ? `≥ min(1.2× C, 0.8× disk) = ${(need / GB).toFixed(2)} GB/s` : '≥ min(1.2× C, 0.8× disk)',
        ...(need ? judge(shm.med >= need, need / shm.med) : {}),
      })
      if (S[`snap.naive.${size}.fails`]) {
        row({ fig: 1, what: 'durable snapshot vs naive Node', size: size_, value: fmtRate(shm), baseline: naiveFailure(size), ratio: '∞', target: '≥ 2× naive', result: 'pass' })
      } else if (naive) {
        row({ fig: 1, what: 'durable snapshot vs naive Node', size: size_, value: fmtRate(shm), baseline: fmtRate(naive), ratio: fmtX(shm.med / naive.med), target: '≥ 2× naive', ...judge(shm.med >= 2 * naive.med, (2 * naive.med) / shm.med) })
      }
    }
    if (c) row({ fig: '2a', what: 'C: write() from the attachment, fsync, rename, fsync dir', size: size_, value: '—', baseline: fmtRate(c), ratio: shm ? fmtX(shm.med / c.med) : '—' })
    if (dw) row({ fig: '2b', what: 'disk ceiling: O_DIRECT 4 MiB writes + fsync', size: size_, value: '—', baseline: fmtRate(dw), ratio: shm ? fmtX(shm.med / dw.med) : '—' })
    if (dr) row({ fig: '2b', what: 'disk ceiling: O_DIRECT 4 MiB reads', size: size_, value: '—', baseline: fmtRate(dr), ratio: '—' })
    if (naive) row({ fig: '2c', what: 'naive Node: shm.attach + fs.writeFileSync + fsync', size: size_, value: '—', baseline: fmtRate(naive), ratio: shm ? fmtX(shm.med / naive.med) : '—' })
    else if (S[`snap.naive.${size}.fails`]) row({ fig: '2c', what: 'naive Node: shm.attach + fs.writeFileSync + fsync', size: size_, value: '—', baseline: naiveFailure(size) })

    const rs = rates(`restore.shmkeep.${size}`, size)
    const rc = rates(`restore.c.${size}`, size)
    if (rs || errors[`restore.shmkeep.${size}`]) {
      row({
        fig: 3,
        what: 'restore, cold cache, verified vs C read() into a new segment',
        size: size_,
        value: rs ? fmtRate(rs) : `error: ${failed(`restore.shmkeep.${size}`)}`,
        baseline: rc ? fmtRate(rc) : `error: ${failed(`restore.c.${size}`)}`,
        ratio: rs && rc ? fmtX(rs.med / rc.med) : '—',
        target: '≥ 1.0× C',
        ...(rs && rc ? judge(rs.med >= rc.med, rc.med / rs.med) : rs ? {} : { result: 'ERROR', off: Infinity }),
      })
    }
    const vs = rates(`verify.shmkeep.${size}`, size)
    const vc = rates(`verify.c.${size}`, size)
    if (vs || errors[`verify.shmkeep.${size}`]) {
      row({
        fig: 4,
        what: 'verify, cold cache vs C read() of the file',
        size: size_,
        value: vs ? fmtRate(vs) : `error: ${failed(`verify.shmkeep.${size}`)}`,
        baseline: vc ? fmtRate(vc) : `error: ${failed(`verify.c.${size}`)}`,
        ratio: vs && vc ? fmtX(vs.med / vc.med) : '—',
        ...(vs ? {} : { result: 'ERROR', off: Infinity }),
      })
    }
  }

  // 5: peak RSS at the largest size that has samples.
  const idle = stats(S['rss.idle'])
  const LIMIT = 150 * MiB
  for (const kind of ['snapshot', 'restore']) {
    const size = [...sizes].reverse().find((s) => S[`rss.${kind}.${s}`])
    if (size === undefined) continue
    const st = stats(S[`rss.${kind}.${size}`])
    row({
      fig: 5,
      what: `peak RSS (VmHWM) of the ${kind} process vs node + the package loaded`,
      size: sizeName(size),
      value: `${fmtMiB(st.max)} (med ${fmtMiB(st.med)})`,
      baseline: idle ? fmtMiB(idle.med) : '—',
      ratio: idle ? fmtX(st.max / idle.med) : '—',
      target: '≤ 150 MiB',
      ...judge(st.max <= LIMIT, st.max / LIMIT),
    })
  }
  for (const size of sizes) {
    const st = stats(S[`rss.naive.${size}`])
    if (st && size === Math.max(...sizes.filter((s) => S[`rss.naive.${s}`]))) {
      row({ fig: 5, what: 'peak RSS of the naive Node snapshot (for comparison)', size: sizeName(size), value: '—', baseline: fmtMiB(st.max) })
    }
  }

  // 6: unchanged checkpoint.
  for (const size of sizes) {
    const same = stats(S[`unchanged.same.${size}`])
    if (!same) {
      if (errors[`unchanged.${size}`]) row({ fig: 6, what: 'unchanged checkpoint', size: sizeName(size), value: `error: ${errors[`unchanged.${size}`]}`, result: 'ERROR', off: Infinity })
      continue
    }
    const c = stats(S[`snap.c.${size}`])
    const first = stats(S[`unchanged.first.${size}`])
    const written = stats(S[`unchanged.same.written.${size}`])
    const duSame = stats(S[`unchanged.same.du.${size}`])
    const speed = c ? c.med / same.med : undefined
    row({
      fig: 6,
      what: 'unchanged checkpoint (app attached): time vs C full snapshot',
      size: sizeName(size),
      value: fmtMs(same),
      baseline: c ? fmtMs(c) : '—',
      ratio: speed ? fmtFaster(speed) : '—',
      target: '≥ 5× faster',
      ...(speed ? judge(speed >= 5, 5 / speed) : {}),
    })
    const share = written.med / size
    row({
      fig: 6,
      what: 'unchanged checkpoint: bytes written (report.bytesWritten; du delta)',
      size: sizeName(size),
      value: `${fmtMiB(written.med)} = ${(share * 100).toFixed(share < 0.01 ? 3 : 1)} % (du +${fmtMiB(duSame.med)})`,
      baseline: `${fmtMiB(size)} (all)`,
      ratio: `${(share * 100).toFixed(share < 0.01 ? 3 : 1)} %`,
      target: '< 1 % of the bytes',
      ...judge(share < 0.01, share / 0.01),
    })
    const pct = stats(S[`unchanged.pct.${size}`])
    const pw = stats(S[`unchanged.pct.written.${size}`])
    const pdu = stats(S[`unchanged.pct.du.${size}`])
    if (pct) {
      const touched = S[`unchanged.pct.touched.${size}`]?.[0] ?? 0
      const chunks = Math.ceil(size / CHUNK)
      row({
        fig: 6,
        what: `every 100th chunk changed (${touched} of ${chunks} = ${((touched / chunks) * 100).toFixed(1)} %): time vs C full snapshot; bytes written`,
        size: sizeName(size),
        value: `${fmtMs(pct)}; ${fmtMiB(pw.med)} = ${((pw.med / size) * 100).toFixed(1)} % (du +${fmtMiB(pdu.med)})`,
        baseline: c ? fmtMs(c) : '—',
        ratio: c ? fmtFaster(c.med / pct.med) : '—',
      })
    }
    const firstLink = stats(S[`unchanged.firstlink.${size}`])
    if (firstLink) row({ fig: 6, what: 'the first unchanged checkpoint (links, and copies the fallback once: state/fallback.ts), for reference', size: sizeName(size), value: fmtMs(firstLink), baseline: c ? fmtMs(c) : '—', ratio: c ? fmtFaster(c.med / firstLink.med) : '—' })
    if (first) row({ fig: 6, what: 'first (full) snapshot of the same runs, for reference', size: sizeName(size), value: fmtMs(first), baseline: c ? fmtMs(c) : '—', ratio: c ? fmtFaster(c.med / first.med) : '—' })
  }

  // 7: freeze pause.
  for (const size of sizes) {
    const p = stats(S[`pause.shmkeep.${size}`])
    const c = stats(S[`pause.c.${size}`])
    if (!p && !errors[`pause.shmkeep.${size}`]) continue
    const written = S[`pause.c.written.${size}`]?.[0]
    row({
      fig: 7,
      what: `checkpoint freeze pause (sigstop) vs C checksum of the resident segment + write() of the changed ${written ? fmtMiB(written) : 'chunks'}`,
      size: sizeName(size),
      value: p ? fmtMs(p) : `error: ${errors[`pause.shmkeep.${size}`]}`,
      baseline: c ? fmtMs(c) : '—',
      ratio: p && c ? fmtX(p.med / c.med) : '—',
      target: '≤ 1.5×',
      ...(p && c ? judge(p.med <= 1.5 * c.med, p.med / (1.5 * c.med)) : p ? {} : { result: 'ERROR', off: Infinity }),
    })
    const whole = stats(S[`pause.checkpoint.${size}`])
    if (p && errors[`pause.shmkeep.${size}`]) row({ fig: 7, what: 'checkpoints measured', size: sizeName(size), value: errors[`pause.shmkeep.${size}`] })
    if (whole) row({ fig: 7, what: 'whole checkpoint (copy + fsync + CURRENT), app running again after the pause', size: sizeName(size), value: fmtMs(whole) })
  }

  // 11: abort.
  const ab = stats(S['abort.ms'])
  if (ab || errors['abort.ms']) {
    row({
      fig: 11,
      what: 'checkpoint aborted by SIGTERM: from the signal until it settled (workers returned), temporary generation removed',
      size: '2 GiB in 4',
      value: ab ? fmtMs(ab) : `error: ${errors['abort.ms']}`,
      target: '≤ 100 ms',
      ...(ab ? judge(ab.med <= 0.1, ab.med / 0.1) : { result: 'ERROR', off: Infinity }),
    })
  }

  // 8: start-up.
  for (const mode of ['container', 'bare']) {
    const r = stats(S[`startup.run.${mode}`])
    const n = stats(S[`startup.node.${mode}`])
    const t = stats(S[`startup.tini.${mode}`])
    const where = mode === 'container' ? `in unshare ${CONTAINER.join(' ')}` : 'bare'
    if (!r && !n) {
      if (errors[`startup.run.${mode}`]) row({ fig: 8, what: `start-up ${where}`, size: '—', value: `error: ${errors[`startup.run.${mode}`]}`, result: 'ERROR', off: Infinity })
      continue
    }
    row({
      fig: 8,
      what: `start-up, \`shmkeep run -- /bin/true\` vs \`node -e 0\`, ${where}`,
      size: '—',
      value: r ? fmtMs(r) : `error: ${errors[`startup.run.${mode}`]}`,
      baseline: n ? fmtMs(n) : '—',
      ratio: r && n ? fmtX(r.med / n.med) : '—',
      target: '≤ 2×',
      ...(r && n ? judge(r.med <= 2 * n.med, r.med / (2 * n.med)) : { result: 'ERROR', off: Infinity }),
    })
    if (t) row({ fig: 8, what: `start-up, \`tini -- /bin/true\`, ${where}`, size: '—', value: '—', baseline: fmtMs(t), ratio: r ? `run: ${fmtX(r.med / t.med)}` : '—' })
  }

  // A failure in some runs of a figure that still has samples: shown, and counted.
  const shown = rows.map((r) => `${r.value} ${r.baseline}`).join('\n')
  for (const [name, message] of Object.entries(errors)) {
    if (name.startsWith('snap.naive.') || shown.includes(message)) continue
    const size = Number(name.split('.').pop())
    row({ fig: '!', what: `failed in some runs: ${name}`, size: Number.isFinite(size) && size > 0 ? sizeName(size) : '—', value: `error: ${message}`, result: 'ERROR', off: Infinity })
  }
  // 9: many small segments.
  for (const [what, name] of [['snapshot', 'snap'], ['unchanged re-snapshot', 'unchanged'], ['restore', 'restore']]) {
    const st = stats(S[`small.${name}.small`])
    const one = stats(S[`small.${name}.one`])
    if (!st && !errors[`small.${name}.small`]) continue
    row({
      fig: 9,
      what: `${SMALL.count} segments of 4 KiB: ${what}, vs one segment of the same ${(SMALL.count * SMALL.size) >> 10} KiB`,
      size: `${SMALL.count} × 4 KiB`,
      value: st ? fmtMs(st) : `error: ${errors[`small.${name}.small`]}`,
      baseline: one ? fmtMs(one) : '—',
      ratio: st && one ? fmtX(st.med / one.med) : '—',
      target: '≤ 1 s',
      ...(st ? judge(st.med <= 1, st.med / 1) : { result: 'ERROR', off: Infinity }),
    })
  }
  // 10: semaphore sets and message queues.
  for (const [what, name] of [['snapshot', 'snap'], ['restore', 'restore']]) {
    const st = stats(S[`ipc.${name}.many`])
    const one = stats(S[`ipc.${name}.one`])
    if (!st && !errors[`ipc.${name}.many`]) continue
    row({
      fig: 10,
      what: `${IPC.sets} semaphore sets + ${IPC.queues} queues × ${IPC.messages} messages: ${what}, vs one semaphore set`,
      size: `${IPC.sets} + ${IPC.queues} × ${IPC.messages}`,
      value: st ? fmtMs(st) : `error: ${errors[`ipc.${name}.many`]}`,
      baseline: one ? fmtMs(one) : '—',
      ratio: st && one ? fmtX(st.med / one.med) : '—',
      target: '≤ 1 s',
      ...(st ? judge(st.med <= 1, st.med / 1) : { result: 'ERROR', off: Infinity }),
    })
  }
  return rows
}

/** Figure 11: a snapshot of 2 GiB in 4 segments, SIGTERM 0.3 s after it started. */
async function abortLatency() {
  const keys = []
  const ids = []
  for (let i = 0; i < 4; i++) {
    const key = `0x5eed01${String(i).padStart(2, '0')}`
    ids.push(json(BASELINE, ['fill', key, 512 * MiB, 11 + i]).id)
    keys.push(key)
  }
  const state = path.join(workDir, 'abort')
  try {
    for (let r = 0; r < runs; r++) {
      fs.rmSync(state, { recursive: true, force: true })
      fs.mkdirSync(state)
      sync()
      const child = spawn(process.execPath, [CHILD, 'abort', state, keys.join(',')], { stdio: ['ignore', 'pipe', 'inherit'] })
      let out = ''
      child.stdout.on('data', (d) => (out += d))
      const exited = new Promise((res) => child.once('exit', res))
      await waitLine(child, (l) => l === 'started', 60_000)
      await new Promise((res) => setTimeout(res, 300))
      child.kill('SIGTERM')
      await exited
      attempt('abort.ms', () => {
        const o = JSON.parse(out.trim().split('\n').pop())
        if (o.ms === null) throw new Error(`the snapshot ended before the signal (${o.settled})`)
        if (o.left.length) throw new Error(`temporary generation left behind: ${o.left.join(', ')}`)
        add('abort.ms', o.ms / 1e3)
      })
    }
  } finally {
    const { shm } = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js'))
    for (const id of ids) shm.remove(id)
    fs.rmSync(state, { recursive: true, force: true })
  }
}

function markdown(rows) {
  const head = ['fig', 'measure', 'size', 'shmkeep', 'baseline', 'ratio', 'target', 'result']
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`]
  for (const r of rows) lines.push(`| ${[r.fig, r.what, r.size, r.value, r.baseline, r.ratio, r.target, r.result].map((x) => String(x).replace(/\|/g, '\\|')).join(' | ')} |`)
  return lines.join('\n')
}

// ---------------------------------------------------------------------------

async function main() {
  if (!fs.existsSync(path.join(root, 'build', 'Release', 'shmkeep.node')) && !fs.existsSync(path.join(root, 'prebuilds'))) {
    console.error('bench: the addon is not built: run `npm install` first')
    return 1
  }
  freshDist()
  const digest = packageDigest()
  const require = createRequire(import.meta.url)
  const pkg = require(path.join(root, 'package.json'))
  const lib = require(path.join(root, 'dist', 'index.js'))
  let crcImpl = 'unknown'
  try {
    crcImpl = require(path.join(root, 'dist', 'native.js')).native.crc32cImpl()
  } catch {
    // an older addon
  }
  if (lib.shm.list().length) {
    console.error('bench: this IPC namespace is not empty; refusing to go on')
    return 1
  }

  const base = pickBase()
  workDir = fs.mkdtempSync(path.join(base, 'shmkeep-bench-'))
  const m = machine(workDir)
  const binDir = path.join(workDir, 'bin')
  fs.mkdirSync(binDir)
  BASELINE = path.join(binDir, 'baseline')
  const cc = run('cc', ['-O2', '-Wall', '-o', BASELINE, path.join(here, 'baseline.c')])
  if (cc.status !== 0) {
    console.error(`bench: cc -O2 bench/baseline.c failed:\n${cc.stderr}`)
    cleanup()
    return 1
  }

  // Sizes: 4 GiB only when asked and when memory and disk allow it.
  const sizes = opts.quick ? [64 * MiB] : [64 * MiB, GiB]
  if (opts.large && !opts.quick) {
    const big = 4 * GiB
    const freeDisk = (() => {
      const s = fs.statfsSync(workDir)
      return s.bavail * s.bsize
    })()
    // The segment, a restored copy of it (another namespace), and the 1 GiB
    // segment of figures 6 and 7 with its restored copy and app, plus room.
    const needMem = 2 * big + 3 * GiB + 2 * GiB
    if (m.memAvailable < needMem) notes.push(`--large: 4 GiB skipped, MemAvailable ${fmtMiB(m.memAvailable)} < ${fmtMiB(needMem)}`)
    else if (freeDisk < 4 * big) notes.push(`--large: 4 GiB skipped, ${fmtMiB(freeDisk)} free on ${workDir} < ${fmtMiB(4 * big)}`)
    else sizes.push(big)
  }
  log(`${m.cpu}, ${m.cores} cores, ${fmtMiB(m.memTotal)}; ${m.kernel}; Node ${m.node}; state dirs in ${workDir} (${m.fsType} on ${m.device})`)
  log(`sizes ${sizes.map(sizeName).join(', ')}; ${runs} runs; crc32c: ${crcImpl}`)

  const t = {}
  const section = async (name, fn) => {
    const t0 = Date.now()
    await fn()
    t[name] = (Date.now() - t0) / 1e3
    log(`${name}: ${t[name].toFixed(0)} s`)
  }
  try {
    if (groups.has('startup')) await section('startup', startup)

    // The segments: pseudo-random bytes, resident.
    const segs = []
    if (groups.has('copy') || groups.has('unchanged') || groups.has('freeze')) {
      for (const [i, size] of sizes.entries()) {
        const key = `0x5eed00${String(i).padStart(2, '0')}`
        const o = json(BASELINE, ['fill', key, size, i + 1])
        segs.push({ id: o.id, key, size })
        log(`segment ${key} (id ${o.id}): ${sizeName(size)} filled in ${Math.round(o.ns / 1e6)} ms`)
      }
    }
    if (groups.has('copy')) {
      await section('copy', () => {
        for (let i = 0; i < 3; i++) attempt('rss.idle', () => add('rss.idle', node(['idle']).peakRss))
        for (const seg of segs) copyFigures(seg)
      })
    }
    // 6 and 7 at 1 GiB (the largest size up to 1 GiB in --quick).
    const mid = [...segs].reverse().find((s) => s.size <= GiB)
    if (groups.has('unchanged') && mid) {
      if (!S[`snap.c.${mid.size}`]) {
        // The C full snapshot this figure compares with, when --only skipped figure 1.
        const cdir = path.join(workDir, 'c6')
        for (let r = 0; r < runs; r++) {
          fs.rmSync(cdir, { recursive: true, force: true })
          fs.mkdirSync(cdir)
          sync()
          attempt(`snap.c.${mid.size}`, () => add(`snap.c.${mid.size}`, json(BASELINE, ['snap', mid.id, cdir, 'seg.data']).ns / 1e9))
        }
        fs.rmSync(cdir, { recursive: true, force: true })
      }
      await section('unchanged', () => unchangedCheckpoint(mid))
    }
    if (groups.has('small')) await section('small', () => smallFigures(lib))
    if (groups.has('ipc')) await section('ipc', () => ipcFigures(lib))
    if (groups.has('ipc')) await section('kinds', () => spawnSync(process.execPath, [path.join(here, 'kinds.mjs'), '--runs', String(runs)], { stdio: ['ignore', 'inherit', 'inherit'] }).status === 0 || notes.push('figure 12 (bench/kinds.mjs, table above, bench/kinds-results.json): a target missed by more than 2x or a measurement failed'))
    if (groups.has('abort')) await section('abort', () => abortLatency())
    if (groups.has('freeze')) {
      await section('freeze', async () => {
        for (const [i, seg] of segs.entries()) if (seg.size <= GiB) await freezePause(seg, i)
      })
    }
  } finally {
    cleanup()
  }

  const digestEnd = packageDigest()
  if (digestEnd !== digest) notes.push(`dist/ or the addon changed while the bench ran (${digest} → ${digestEnd}): another build; the figures may mix two versions of shmkeep`)
  const rows = buildRows(sizes)
  const table = markdown(rows)
  const judged = rows.filter((r) => r.result === 'pass' || r.result === 'MISS' || r.result === 'ERROR')
  const missed = judged.filter((r) => r.result !== 'pass')
  const far = missed.filter((r) => r.result === 'ERROR' || r.off > 2)
  const header = [
    `shmkeep ${pkg.version} benchmark — ${new Date(started).toISOString()}`,
    `${m.cpu}, ${m.cores} cores, ${fmtMiB(m.memTotal)} RAM; ${m.kernel}; Node ${m.node}; crc32c ${crcImpl}`,
    `state dirs on ${m.fsType} (${m.device}${m.rotational === undefined ? '' : m.rotational ? ', rotational' : ', non-rotational'}); IPC namespace: unshare ${process.env.SHMKEEP_BENCH_NS}`,
    `median (min–max) of ${runs} runs (start-up: ${Math.max(10, 2 * runs)}); GB/s = 10^9 bytes/s; every ratio is to a baseline of this same run`,
  ]
  console.log(`${header.join('\n')}\n\n${table}\n`)
  for (const n of [...new Set(notes)]) console.log(`note: ${n}`)
  console.log(`targets: ${judged.length - missed.length} met, ${missed.length} missed${far.length ? ` (${far.length} by more than 2× or failed: ${far.map((r) => `fig ${r.fig}${r.size === '—' ? '' : ` ${r.size}`} ${r.what.split(/[:(]/)[0].trim()}`).join('; ')})` : ''}; ${((Date.now() - started) / 1e3).toFixed(0)} s`)

  const results = {
    tool: 'shmkeep-bench',
    version: pkg.version,
    startedAt: new Date(started).toISOString(),
    durationS: (Date.now() - started) / 1e3,
    sectionsS: t,
    options: { runs, quick: !!opts.quick, large: !!opts.large, only: [...groups] },
    machine: { ...m, loadavgEnd: os.loadavg(), crc32c: crcImpl, workDir },
    package: { digest, digestEnd },
    sizes,
    samples: S,
    errors,
    notes: [...new Set(notes)],
    header,
    rows,
    table,
  }
  fs.writeFileSync(path.join(here, 'results.json'), JSON.stringify(results, null, 1) + '\n')
  log('wrote bench/results.json')
  if (far.length && !opts['report-only']) return 1
  return 0
}

if (opts.table !== undefined) {
  // Re-render a saved run: its samples through the same table code.
  const saved = JSON.parse(fs.readFileSync(opts.table, 'utf8'))
  Object.assign(S, saved.samples)
  Object.assign(errors, saved.errors)
  console.log(`${saved.header?.join('\n') ?? `shmkeep ${saved.version} benchmark — ${saved.startedAt}`}\n\n${markdown(buildRows(saved.sizes))}\n`)
  for (const n of saved.notes ?? []) console.log(`note: ${n}`)
  process.exit(0)
}

main().then(
  (code) => process.exit(code),
  (e) => {
    cleanup()
    console.error(`bench: ${e.stack ?? e}`)
    process.exit(1)
  },
)
