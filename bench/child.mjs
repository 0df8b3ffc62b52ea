// One measured operation in a fresh Node process (bench/run.mjs starts it):
// loads the built package (dist/), times only the operation itself, and prints
// one JSON line with the time, the report's figures and the process's peak
// resident set (VmHWM, read from /proc/self/status at its end).
//
//   node bench/child.mjs snapshot STATE_DIR KEY KEEP REASON
//   node bench/child.mjs restore STATE_DIR          (in a fresh IPC namespace; removes what it restored)
//   node bench/child.mjs verify STATE_DIR
//   node bench/child.mjs naive ID DIR NAME          attach as one Buffer, fs.writeFileSync, fsync, rename
//   node bench/child.mjs idle                       load the package, nothing else
//   node bench/child.mjs abort STATE_DIR KEYS       a checkpoint that SIGTERM aborts: prints "started",
//                                                   then ms from the signal until snapshot() settled,
//                                                   and the temporary generations left behind
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const lib = require(path.join(root, 'dist', 'index.js'))

function peakRssBytes() {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))
  return m ? Number(m[1]) * 1024 : null
}

function out(o) {
  process.stdout.write(JSON.stringify({ ...o, peakRss: peakRssBytes() }) + '\n')
}

function errorOf(e) {
  return { error: e instanceof Error ? e.message : String(e), code: e?.code }
}

const [mode, ...args] = process.argv.slice(2)
try {
  if (mode === 'snapshot') {
    const [stateDir, key, keep, reason] = args
    const t0 = performance.now()
    const r = await lib.snapshot({ stateDir, keep: Number(keep), filter: { keys: key }, reason: reason || 'manual' })
    const ms = performance.now() - t0
    out({
      ms,
      generation: r.generation,
      bytes: r.bytes,
      bytesWritten: r.bytesWritten,
      segments: r.segments.map((s) => ({ key: s.key, status: s.status, bytesWritten: s.bytesWritten, dataChunks: s.dataChunks, zeroChunks: s.zeroChunks })),
      reportMs: r.durationMs,
    })
  } else if (mode === 'restore') {
    const [stateDir] = args
    const t0 = performance.now()
    const r = await lib.restore({ stateDir })
    const ms = performance.now() - t0
    const restored = r.segments.filter((s) => s.status === 'restored')
    for (const s of restored) lib.shm.remove(s.id)
    out({ ms, generation: r.generation, bytes: r.bytes, segments: restored.length, bytesRead: r.segments.reduce((n, s) => n + s.bytesRead, 0) })
  } else if (mode === 'verify') {
    const [stateDir] = args
    const t0 = performance.now()
    const r = await lib.verify(stateDir)
    const ms = performance.now() - t0
    const segs = r.generations.flatMap((g) => g.segments)
    out({ ms, ok: r.ok, bytesRead: segs.reduce((n, s) => n + s.bytesRead, 0), bytes: segs.reduce((n, s) => n + s.size, 0) })
  } else if (mode === 'naive') {
    const [id, dir, name] = args
    const tmp = path.join(dir, `.${name}.tmp`)
    const t0 = performance.now()
    let buf
    try {
      buf = lib.shm.attach(Number(id), { readonly: true })
      const fd = fs.openSync(tmp, 'w', 0o600)
      fs.writeFileSync(fd, buf)
      fs.fsyncSync(fd)
      fs.closeSync(fd)
      fs.renameSync(tmp, path.join(dir, name))
      const d = fs.openSync(dir, 'r')
      fs.fsyncSync(d)
      fs.closeSync(d)
    } catch (e) {
      fs.rmSync(tmp, { force: true })
      out({ ...errorOf(e), ms: performance.now() - t0 })
      process.exit(0)
    }
    const ms = performance.now() - t0
    const bytes = buf.length
    lib.shm.detach(buf)
    out({ ms, bytes })
  } else if (mode === 'abort') {
    const [stateDir, keys] = args
    const controller = new AbortController()
    let signalAt
    process.once('SIGTERM', () => {
      signalAt = performance.now()
      controller.abort()
    })
    process.stdout.write('started\n')
    // A checkpoint's copy (afterCopy: writes to the page cache, as run's checkpoints do): its dirty pages go with the abandoned generation.
    const settled = await lib.snapshot({ stateDir, keep: 1, filter: { keys }, reason: 'checkpoint', afterCopy: () => {}, signal: controller.signal }).then(
      () => 'saved',
      (e) => e.message,
    )
    const ms = signalAt === undefined ? null : performance.now() - signalAt
    const left = fs.readdirSync(stateDir).filter((n) => n.startsWith('.tmp-'))
    out({ ms, settled, left })
  } else if (mode === 'idle') {
    out({ ms: 0 })
  } else {
    throw new Error(`unknown mode ${mode}`)
  }
} catch (e) {
  out(errorOf(e))
  process.exit(1)
}
