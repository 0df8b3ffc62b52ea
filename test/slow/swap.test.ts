/**
 * Never zeros for swapped pages (issue 10, item 3), for real: swap on a file
 * (fallocate + mkswap + swapon), a segment filled with pseudo-random bytes by
 * a process in a v1 memory cgroup (its pages are charged there), then the
 * cgroup's memory.limit_in_bytes pushed down so that most of the segment goes
 * to swap — not MADV_PAGEOUT, which leaves pages in the swap cache where
 * mincore calls them resident. mincore must report pages absent before the
 * save (else the test proves nothing); then every way of reading holes gives
 * the written bytes: `shmkeep snapshot` + `restore` (map_files as root), and
 * saveSegment with 'mincoreSwapCheck' and 'read' (what runs without
 * CAP_SYS_ADMIN). swapoff and the swap file's removal always follow.
 */
import { createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { expect, test } from 'vitest'
import { binDir, have, root, run } from '../helpers'

const require = createRequire(import.meta.url)
const native = require('node-gyp-build')(root)
const writer = path.join(binDir, 'writer')
const cli = path.join(root, 'bin', 'shmkeep.js')
const MiB = 1 << 20
const SIZE = 256 * MiB
const KEY = '0x5a0a0001'
const V1 = '/sys/fs/cgroup/memory'

const why = (() => {
  if (process.getuid!() !== 0 || process.env.SHMKEEP_TEST_NS === 'user+ipc') return 'swapon and memory cgroups need real root'
  if (!['swapon', 'swapoff', 'mkswap', 'fallocate'].every(have)) return 'swapon, swapoff, mkswap or fallocate is missing (util-linux)'
  if (!fs.existsSync(path.join(V1, 'memory.limit_in_bytes'))) return `no cgroup v1 memory controller at ${V1} (this test pushes pages out with memory.limit_in_bytes)`
  return ''
})()

function shmSwap(id: number): number {
  for (const line of fs.readFileSync('/proc/sysvipc/shm', 'utf8').trim().split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (Number(f[1]) === id) return Number(f[15])
  }
  return -1
}

function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}

test.skipIf(why !== '')(`swapped pages are saved as their bytes, never as zeros${why ? ` (skipped: ${why})` : ''}`, async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-swap-'))
  const swapFile = path.join(work, 'swapfile')
  const cg = path.join(V1, `shmkeep-swap-${process.pid}`)
  let swapOn = false
  let id = -1
  try {
    expect(run('fallocate', ['-l', String(512 * MiB), swapFile]).status).toBe(0)
    fs.chmodSync(swapFile, 0o600)
    expect(run('mkswap', [swapFile]).status).toBe(0)
    const on = run('swapon', [swapFile])
    expect(on.stderr).toBe('')
    swapOn = true
    fs.mkdirSync(cg)
    fs.writeFileSync(path.join(cg, 'memory.limit_in_bytes'), String(3 * 2 ** 30))
    // The writer joins the cgroup before it faults the pages in: they are charged there.
    const fill = spawnSync('sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$1" fill "$2" "$3" 7', cg, writer, KEY, String(SIZE)], { encoding: 'utf8' })
    expect(fill.stderr).toBe('')
    const written = fill.stdout.trim()
    id = native.shmGet(Number(KEY), 0, 0, -1, -1)
    const pushOut = () => fs.writeFileSync(path.join(cg, 'memory.limit_in_bytes'), String(32 * MiB))

    // mincore sees swapped pages as absent: a save that trusts it would skip them.
    pushOut()
    expect(shmSwap(id)).toBeGreaterThan(64 * MiB)
    const trusting = await native.saveSegment({ id, uid: -1, gid: -1, path: null, chunkSize: 4 * MiB, holes: 'mincore', fsync: false })
    expect(trusting.bytesWritten).toBeLessThan(SIZE / 2)

    // shmkeep snapshot + restore in a fresh namespace: the written bytes.
    pushOut()
    const state = path.join(work, 'state')
    const snap = run(process.execPath, [cli, 'snapshot', '--state-dir', state, '--key', KEY, '-q'])
    expect(snap.stderr).toBe('')
    expect(snap.status).toBe(0)
    expect(run(process.execPath, [cli, 'verify', '--state-dir', state, '-q']).status).toBe(0)
    const script = '"$0" "$1" restore --state-dir "$2" -q >&2 && exec "$3" hash "$4"'
    const restored = run('unshare', ['--ipc', 'sh', '-c', script, process.execPath, cli, state, writer, KEY])
    // The only line allowed: the warning that a temporary dir is not a mounted volume.
    expect(restored.stderr.split('\n').filter((l) => l && !/is not a mount point/.test(l))).toEqual([])
    expect(restored.stdout.trim()).toBe(written)
    const gen = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
    const data = fs.readdirSync(path.join(state, gen)).find((f) => f.endsWith('.data'))!
    const good = sha(path.join(state, gen, data))

    // Without map_files: the swap column checked after each chunk's mincore, or read everything.
    for (const holes of ['mincoreSwapCheck', 'read']) {
      pushOut()
      expect(shmSwap(id)).toBeGreaterThan(64 * MiB)
      const out = path.join(work, holes)
      const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: out, chunkSize: 4 * MiB, holes, fsync: false })
      expect(saved.absentChunks).toBe(0)
      expect(sha(out)).toBe(good)
      if (holes === 'mincoreSwapCheck') expect(saved.holesLost).toBe(true)
    }
  } finally {
    if (id >= 0) {
      try {
        native.shmRemove(id, -1, -1)
      } catch {
        // gone
      }
    }
    if (swapOn) spawnSync('swapoff', [swapFile])
    if (fs.existsSync(cg)) {
      try {
        fs.rmdirSync(cg)
      } catch {
        // charged pages may keep it busy for a moment
        await new Promise((r) => setTimeout(r, 500))
        try {
          fs.rmdirSync(cg)
        } catch (e) {
          console.error(`could not remove ${cg}: ${(e as Error).message}`)
        }
      }
    }
    fs.rmSync(work, { recursive: true, force: true })
  }
})
