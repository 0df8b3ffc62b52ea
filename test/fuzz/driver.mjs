// The child side of the state file fuzz (test/fuzz.test.ts). Plain
// JavaScript run by node inside `unshare --ipc` (and, for `run`, under
// strace): it loads the built package (dist/ of a frozen copy) and never
// vitest. Two commands:
//
//   driver.mjs build PKG BASE OUT.json
//     Creates the objects of two generations in this (fresh) namespace and
//     snapshots them into BASE; writes what was live at each snapshot (the
//     oracle's expectation, taken from the kernel, not from the state dir).
//
//   driver.mjs run PLAN.json RESULTS.jsonl
//     For each case of the plan: copy BASE (cp --sparse=always: no inode is
//     shared with BASE), apply the case's mutations, restore it with the
//     library, fingerprint what the namespace then holds, empty the
//     namespace for the next case. Several restores per process: the
//     namespace is emptied between them, every case has its own state dir,
//     so each restore starts as in a fresh namespace. Results are appended
//     one JSON line per event (`start`, then `done`), so the parent can tell
//     which case a crash or a hang belongs to. Each case is framed in the
//     strace output by opens of `/nonexistent/shmkeep-fuzz-mark-<id>-start`
//     and `-end` (they fail; strace shows them).
import { spawnSync } from 'node:child_process'
import crypto from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'

const [command, ...args] = process.argv.slice(2)

function load(pkg) {
  const require = createRequire(path.join(pkg, 'package.json'))
  return {
    lib: require(path.join(pkg, 'dist', 'index.js')),
    native: require(path.join(pkg, 'dist', 'native.js')).native,
    msg: require(path.join(pkg, 'dist', 'msg.js')),
    lineage: require(path.join(pkg, 'dist', 'state', 'lineage.js')),
    files: require(path.join(pkg, 'dist', 'state', 'files.js')),
  }
}

const hex = (n) => '0x' + (n >>> 0).toString(16).padStart(8, '0')
const sha1 = (b) => crypto.createHash('sha1').update(b).digest('hex')

/**
 * Everything this namespace holds: each object's identity, attributes and a
 * hash of its contents (hashed here, where the bytes are: the parent only
 * compares short strings). shmkeep's own lineage queue is counted apart.
 */
function fingerprint(m) {
  const { native } = m
  const objects = []
  let lineageQueues = 0
  for (const s of native.shmList().segments) {
    let hash
    try {
      const map = native.shmAttach(s.id, true, 0, -1, -1, -1, s.size)
      try {
        hash = sha1(map.buffer)
      } finally {
        native.shmDetach(map.handle, map.buffer)
      }
    } catch (e) {
      hash = `unreadable: ${e.message}`
    }
    objects.push({ kind: 'shm', key: hex(s.key), id: s.id, size: s.size, mode: s.mode & 0o777, uid: s.uid, gid: s.gid, cuid: s.cuid, cgid: s.cgid, hash })
  }
  for (const s of native.semList().sets) {
    const values = native.semGetAll(s.id, s.nsems, -1, -1)
    objects.push({ kind: 'sem', key: hex(s.key), id: s.id, mode: s.mode & 0o777, uid: s.uid, gid: s.gid, cuid: s.cuid, cgid: s.cgid, nsems: s.nsems, hash: values.join(',') })
  }
  for (const q of native.msgList().queues) {
    if (m.lineage.isLineageQueue(q)) {
      lineageQueues++
      continue
    }
    const copy = m.msg.peekAll(q.id)
    const h = crypto.createHash('sha1')
    for (const x of copy.messages) h.update(`${x.type}:${x.data.length}:`).update(x.data)
    objects.push({ kind: 'msg', key: hex(q.key), id: q.id, mode: q.mode & 0o777, uid: q.uid, gid: q.gid, cuid: q.cuid, cgid: q.cgid, qbytes: q.qbytes, qnum: q.qnum, hash: h.digest('hex') })
  }
  objects.sort((a, b) => (a.kind + a.key + a.id < b.kind + b.key + b.id ? -1 : 1))
  return { objects, lineageQueues }
}

/** Remove every object of this namespace (shmkeep's lineage queue too). */
function empty(native) {
  for (const s of native.shmList().segments) native.shmRemove(s.id, -1, -1)
  for (const s of native.semList().sets) native.semRemove(s.id, -1, -1)
  for (const q of native.msgList().queues) native.msgRemove(q.id, -1, -1)
}

// ---------------------------------------------------------------------------
// build

/** A deterministic byte stream (xorshift32), so a base is the same bytes every time. */
function bytes(n, seed) {
  const out = Buffer.alloc(n)
  let x = seed >>> 0 || 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

function fill(native, id, at, data, as = -1) {
  const map = native.shmAttach(id, false, 0, -1, as, as, 1 << 30)
  try {
    data.copy(map.buffer, at)
  } finally {
    native.shmDetach(map.handle, map.buffer)
  }
}

async function build(pkg, base, out) {
  const m = load(pkg)
  const { native, lib } = m
  const c = native.shmConstants
  const create = c.IPC_CREAT | c.IPC_EXCL | 0o600
  const MiB = 1 << 20
  const K = (n) => 0x5a0f0000 + n
  const seg = {}
  const mk = (n, size, mode, as = -1) => {
    const id = native.shmGet(K(n), size, create, as, as)
    seg[n] = id
    native.shmSet(id, as === -1 ? 0 : as, as === -1 ? 0 : as, mode, -1, -1)
    return id
  }
  // Generation 1: 1 byte, 4 KiB (both packed), 3 MiB, 64 MiB sparse (two
  // pages written), 256 KiB created by uid 1000 (0600), a semaphore set, a queue.
  fill(native, mk(1, 1, 0o600), 0, bytes(1, 11))
  fill(native, mk(2, 4096, 0o640), 0, bytes(4096, 12))
  fill(native, mk(3, 3 * MiB, 0o644), 0, bytes(3 * MiB, 13))
  const big = mk(4, 64 * MiB, 0o600)
  fill(native, big, 0, bytes(4096, 14))
  fill(native, big, 41 * MiB, bytes(4096, 15))
  fill(native, mk(5, 256 * 1024, 0o600, 1000), 0, bytes(256 * 1024, 16), 1000)
  const sem = native.semGet(K(16), 3, create, -1, -1)
  native.semSetAll(sem, [1, 7, 300], -1, -1)
  native.semSet(sem, 1000, 1000, 0o660, -1, -1)
  const q = native.msgGet(K(17), create, -1, -1)
  native.msgSet(q, -1, -1, -1, 8192, -1, -1)
  for (const [type, text] of [[1, 'first'], [7, 'second message'], [2, '']]) native.msgSend(q, type, Buffer.from(text), 0, -1, -1)
  native.msgSet(q, 0, 0, 0o620, -1, -1, -1)
  fs.mkdirSync(base, { mode: 0o700 })
  const r1 = await lib.snapshot({ stateDir: base })
  const g1 = fingerprint(m).objects
  // Generation 2: new bytes in every segment but the 64 MiB one (its data
  // file is then a hard link shared by both generations), a mode changed, a
  // segment added, other semaphore values, one more message.
  fill(native, seg[1], 0, bytes(1, 21))
  fill(native, seg[2], 0, bytes(4096, 22))
  fill(native, seg[3], MiB, bytes(MiB, 23))
  fill(native, seg[5], 8192, bytes(4096, 26), 1000)
  native.shmSet(seg[2], 0, 0, 0o664, -1, -1)
  fill(native, mk(6, 8192, 0o600), 100, bytes(50, 27))
  native.semSetAll(sem, [0, 8, 301], -1, -1)
  native.msgSend(q, 3, Buffer.from('third'), 0, -1, -1)
  const r2 = await lib.snapshot({ stateDir: base })
  const g2 = fingerprint(m).objects
  fs.writeFileSync(out, JSON.stringify({ generations: { [r1.generation]: g1, [r2.generation]: g2 }, current: r2.generation }))
}

// ---------------------------------------------------------------------------
// run

function stateFile(d, rel) {
  return path.join(d, rel)
}

function sh(cmd, argv) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')}: ${r.stderr || r.error}`)
}

/** Whether a directory between `d` and `f` is a symbolic link (then `f` is not in the copy at all). */
function throughLink(d, f) {
  for (let dir = path.dirname(f); dir.length > d.length; dir = path.dirname(dir)) {
    try {
      if (fs.lstatSync(dir).isSymbolicLink()) return true
    } catch {
      return false
    }
  }
  return false
}

/** Apply one mutation to the copy `d`; returns a note when it could not apply (the file was gone). */
function apply(m, d, bait, op) {
  const f = stateFile(d, op.file)
  // A mutation never goes through a link an earlier one planted: it would damage the bait, not the copy.
  if (throughLink(d, f)) return `${op.op}: through a link`
  const exists = () => {
    try {
      fs.lstatSync(f)
      return true
    } catch {
      return false
    }
  }
  switch (op.op) {
    case 'flip': {
      let fd
      try {
        fd = fs.openSync(f, fs.constants.O_RDWR | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK)
      } catch (e) {
        return `flip: ${e.code}`
      }
      try {
        const st = fs.fstatSync(fd)
        if (!st.isFile() || st.size === 0) return 'flip: not a non-empty file'
        const at = op.at % st.size
        const b = Buffer.alloc(1)
        fs.readSync(fd, b, 0, 1, at)
        b[0] ^= op.xor
        fs.writeSync(fd, b, 0, 1, at)
      } finally {
        fs.closeSync(fd)
      }
      return undefined
    }
    case 'truncate':
    case 'extend': {
      let st
      try {
        st = fs.lstatSync(f)
      } catch {
        return `${op.op}: missing`
      }
      if (!st.isFile()) return `${op.op}: not a file`
      if (op.op === 'truncate') fs.truncateSync(f, Math.floor(st.size * op.fraction))
      else if (op.sparse) fs.truncateSync(f, st.size + op.bytes)
      else fs.appendFileSync(f, bytes(op.bytes, op.seed))
      return undefined
    }
    case 'rm':
      if (!exists()) return 'rm: missing'
      fs.rmSync(f, { recursive: true, force: true })
      return undefined
    case 'symlink':
    case 'mkdir':
    case 'mkfifo': {
      fs.rmSync(f, { recursive: true, force: true })
      if (op.op === 'mkdir') fs.mkdirSync(f, { mode: 0o700 })
      else if (op.op === 'mkfifo') sh('mkfifo', ['-m', '0600', f])
      else {
        const target = path.join(bait, op.target)
        fs.symlinkSync(op.relative ? path.relative(path.dirname(f), target) : target, f)
      }
      return undefined
    }
    case 'chmod':
      if (!exists()) return 'chmod: missing'
      if (fs.lstatSync(f).isSymbolicLink()) return 'chmod: a link' // chmod follows links
      fs.chmodSync(f, op.mode)
      return undefined
    case 'chown':
      if (!exists()) return 'chown: missing'
      fs.lchownSync(f, op.uid, op.gid)
      return undefined
    case 'forge': {
      // Rewrite one field of a checked JSON file, with a correct CRC (the
      // CRC finds damage; it does not authenticate).
      if (!exists() || !fs.lstatSync(f).isFile()) return 'forge: not a file'
      let data
      try {
        data = fs.readFileSync(f)
      } catch (e) {
        return `forge: ${e.code}`
      }
      const nl = data.indexOf(10)
      const h = /^shmkeep-json (\d+) /.exec(data.subarray(0, nl + 1).toString('latin1'))
      let value
      try {
        value = JSON.parse(data.subarray(nl + 1).toString('utf8'))
      } catch {
        return 'forge: not JSON any more'
      }
      // A path element `key=0x…` is the element of a list with that key (regressions name records so).
      const step = (at, k) => (typeof k === 'string' && k.startsWith('key=') && Array.isArray(at) ? at.findIndex((x) => x?.key === k.slice(4)) : k)
      if (op.path.length === 0) value = op.value
      else {
        let at = value
        for (const k of op.path.slice(0, -1)) {
          const i = step(at, k)
          if (at === null || typeof at !== 'object' || !(i in at)) return `forge: no ${op.path.join('.')}`
          at = at[i]
        }
        if (at === null || typeof at !== 'object') return `forge: no ${op.path.join('.')}`
        const last = step(at, op.path[op.path.length - 1])
        if (op.table) {
          // One byte of one entry of a chunk table (base64).
          if (typeof at[last] !== 'string') return 'forge: no chunk table'
          const t = Buffer.from(at[last], 'base64')
          const i = (op.table.chunk % (t.length / 8)) * 8 + op.table.byte
          t[i] = op.table.value === 'flip-type' ? (t[i] === 1 ? 0 : 1) : op.table.value
          at[last] = t.toString('base64')
        } else if (op.splice && Array.isArray(at)) at.splice(last, 1)
        else if (op.remove) delete at[last]
        else at[last] = op.value
      }
      fs.writeFileSync(f, m.files.encodeCheckedJson(op.format ?? Number(h?.[1] ?? 2), value))
      return undefined
    }
    default:
      throw new Error(`unknown mutation ${op.op}`)
  }
}

/** Every entry under the bait (type, size, mode, links, mtime): nothing shmkeep does may change it. */
function listing(dir) {
  const out = []
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name)
      const st = fs.lstatSync(path.join(dir, r))
      out.push(`${r} ${st.mode.toString(8)} ${st.size} ${st.nlink} ${st.uid}:${st.gid} ${st.mtimeMs}`)
      if (e.isDirectory()) walk(r)
    }
  }
  walk('')
  return out.sort().join('\n')
}

function mark(id, what) {
  try {
    fs.openSync(`/nonexistent/shmkeep-fuzz-mark-${id}-${what}`, 'r')
  } catch {
    // the point is the openat strace records
  }
}

/** Generation directories of the copy (real directories, as restore counts them). */
function generationDirs(d) {
  return fs
    .readdirSync(d, { withFileTypes: true })
    .filter((e) => /^gen-\d{12}$/.test(e.name) && e.isDirectory())
    .map((e) => e.name)
    .sort()
}

async function runPlan(planFile, resultsFile) {
  const plan = JSON.parse(fs.readFileSync(planFile, 'utf8'))
  const m = load(plan.pkg)
  const out = fs.openSync(resultsFile, 'a')
  const emit = (o) => fs.writeSync(out, JSON.stringify(o) + '\n')
  empty(m.native)
  for (const c of plan.cases) {
    emit({ start: c.id, at: Date.now() })
    const d = path.join(plan.work, `case-${c.id}`)
    fs.rmSync(d, { recursive: true, force: true })
    sh('cp', ['-a', '--sparse=always', '--reflink=never', plan.base, d])
    const notes = []
    const bait0 = listing(plan.bait)
    for (const op of c.ops) {
      const note = apply(m, d, plan.bait, op)
      if (note) notes.push(note)
    }
    const bait1 = listing(plan.bait)
    const gens = generationDirs(d)
    const logs = []
    const log = { log: (level, event, message) => logs.push(`${level} ${event}: ${message}`) }
    const started = performance.now()
    mark(c.id, 'start')
    let result
    try {
      const report = await m.lib.restore({ stateDir: d, log })
      result = { outcome: report.generation === null ? 'nothing' : 'restored', generation: report.generation, rejected: report.rejected.map((r) => r.generation) }
    } catch (e) {
      // A state dir refused before anything is looked at (untrusted, not a
      // directory) is a StateFileError; once restore runs, a RestoreError.
      // A system error naming a state file (taking the lock on a LOCK that is
      // a directory) is counted apart: a refusal, though not a RestoreError.
      const refusal = e instanceof m.lib.RestoreError || e instanceof m.lib.StateFileError
      const system = !refusal && e instanceof Error && /^E[A-Z]+$/.test(String(e.code)) && e.message.includes(d)
      result = refusal ? { outcome: 'refused', message: e.message } : system ? { outcome: 'refused (system error)', message: e.message } : { outcome: 'threw', message: String(e?.stack ?? e) }
    }
    mark(c.id, 'end')
    const ms = performance.now() - started
    const fp = fingerprint(m)
    empty(m.native)
    fs.rmSync(d, { recursive: true, force: true })
    const bait2 = listing(plan.bait)
    const diff = (a, b) => [...b.split('\n').filter((x) => !a.includes(x)).map((x) => `+${x}`), ...a.split('\n').filter((x) => !b.includes(x)).map((x) => `-${x}`)].join('; ')
    const bait = bait1 !== bait0 ? `the mutations themselves changed the bait (a fuzz bug): ${diff(bait0, bait1)}` : bait2 !== bait1 ? diff(bait1, bait2) : undefined
    if (bait) {
      // Put the bait back for the next cases.
      fs.rmSync(path.join(plan.bait, 'state'), { recursive: true, force: true })
      sh('cp', ['-a', '--sparse=always', '--reflink=never', plan.base, path.join(plan.bait, 'state')])
    }
    emit({ done: c.id, ...result, ...fp, gens, notes, logs: logs.slice(0, 20), ms: Math.round(ms), bait })
  }
  fs.closeSync(out)
}

if (command === 'build') await build(args[0], args[1], args[2])
else if (command === 'run') await runPlan(args[0], args[1])
else {
  console.error('usage: driver.mjs build PKG BASE OUT.json | run PLAN.json RESULTS.jsonl')
  process.exit(2)
}
