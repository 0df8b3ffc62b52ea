/**
 * A checkpoint aborted by TERM (issue 10, item 6): `shmkeep run` with 2 GiB
 * in 4 segments and an app that exits on TERM at once. TERM arrives while a
 * checkpoint copies; the checkpoint must be gone — its workers returned (the
 * copy workers poll a cancel flag per chunk, mapLimit waits for every one in
 * flight) and its temporary generation unlinked — before the final snapshot
 * takes the state dir, and the final snapshot must be whole and verify.
 *
 * No timing is asserted (the machine is shared); the latency from TERM to
 * "checkpoint abandoned" is printed, and `npm run bench` figure 11 measures
 * it (docs/BENCHMARKS.md).
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { expect, test } from 'vitest'
import { binDir, root, run } from '../helpers'

const cli = path.join(root, 'bin', 'shmkeep.js')
const mkseg = path.join(binDir, 'mkseg')
const MiB = 1 << 20

test('TERM during a checkpoint of 2 GiB in 4 segments: the checkpoint is abandoned, nothing of it is left, the final snapshot is whole and verifies', async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-cancel-'))
  const state = path.join(work, 'state')
  fs.mkdirSync(state, { mode: 0o700 })
  try {
    const app = `for k in 0 1 2 3; do ${mkseg} 0x5ca1000$k ${512 * MiB} 0600 pat >/dev/null || exit 9; done; echo ready; exec sleep 1000`
    const child = spawn('unshare', ['--ipc', process.execPath, cli, 'run', '--state-dir', state, '--checkpoint-interval', '0.2', '--log-format', 'json', '--', 'sh', '-c', app], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    const events = () =>
      err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { time: string; event: string; msg: string; generation?: string })
    const until = async (what: string, ok: () => boolean, ms = 240_000) => {
      const end = Date.now() + ms
      while (!ok()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}; log:\n${err}`)
        await new Promise((r) => setTimeout(r, 2))
      }
    }
    // The app is ready, and a checkpoint of all 4 segments is early in its
    // copy: less than a quarter of the 2 GiB in its temporary generation, so
    // that TERM surely lands while it copies (the rest takes seconds here).
    await until('the app', () => out.includes('ready'))
    // A checkpoint begun after that holds all 4 segments.
    const before = new Set(fs.readdirSync(state))
    const early = () => {
      const tmp = fs.readdirSync(state).find((n) => n.startsWith('.tmp-gen-') && !before.has(n))
      if (!tmp) return false
      try {
        const bytes = fs.readdirSync(path.join(state, tmp)).filter((f) => f.endsWith('.data')).reduce((n, f) => n + fs.statSync(path.join(state, tmp, f)).blocks * 512, 0)
        return bytes > 0 && bytes < 512 * MiB
      } catch {
        return false // renamed meanwhile
      }
    }
    await until('a checkpoint early in its copy', early)
    const termAt = Date.now()
    child.kill('SIGTERM')
    const status = await exited
    const log = events()
    const abandoned = log.find((e) => e.event === 'checkpoint.failed' && /abandoned/.test(e.msg))
    expect(abandoned, err).toBeDefined()
    console.log(`TERM → checkpoint abandoned (workers returned, temporary generation removed): ${Date.parse(abandoned!.time) - termAt} ms (log time, ms resolution)`)
    // The final snapshot came after it, whole.
    const final = log.find((e) => e.event === 'snapshot')
    expect(final, err).toBeDefined()
    expect(log.indexOf(final!)).toBeGreaterThan(log.indexOf(abandoned!))
    expect(status, err).toBe(143) // the app's status: killed by TERM
    expect(fs.readdirSync(state).filter((n) => n.startsWith('.tmp-'))).toEqual([])
    const current = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
    expect(final!.generation).toBe(current)
    const v = run(process.execPath, [cli, 'verify', '--state-dir', state, '--json'])
    expect(v.status, v.stderr).toBe(0)
    const report = JSON.parse(v.stdout)
    const segments = report.generations?.[0]?.segments ?? report.segments
    expect(segments.map((s: { size: number }) => s.size)).toEqual([512 * MiB, 512 * MiB, 512 * MiB, 512 * MiB])
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}, 600_000)
