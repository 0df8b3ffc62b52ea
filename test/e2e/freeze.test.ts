/**
 * `--freeze=sigstop` makes every periodic checkpoint an image of one instant.
 * A writer sweeps a 64 MiB segment again and again, stamping one word per
 * page with the sweep number: any instant's memory holds pages 0..k stamped n
 * and the rest n−1. Every image saved under sigstop has that shape; under
 * --freeze=none the writer completes sweeps during the copy, and images tear.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { binDir, root } from '../helpers'
import { Container } from './container'

const sweep = path.join(binDir, 'sweep')
const cli = path.join(root, 'bin', 'shmkeep.js')
const dirs: string[] = []
afterEach(() => {
  // Retries: a container that a failed test left running may still be writing there.
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 })
})

/**
 * Check each new generation's image as it appears (before pruning takes it),
 * until `wanted` were checked or `budgetMs` ran out (a loaded machine makes
 * fewer checkpoints: the callers ask for a minimum, not for `wanted`); with
 * `verify`, also run `shmkeep verify` on it (verified: its checksums describe
 * its files).
 */
async function watchImages(stateDir: string, wanted: number, container: Container, budgetMs: number, verify = false) {
  const seen = new Set<string>()
  const results: Array<{ ok: boolean; sweep?: number; text: string; verified?: boolean }> = []
  const until = Date.now() + budgetMs
  while (results.length < wanted && Date.now() < until) {
    if (container.child.exitCode !== null) throw new Error(`container exited: ${container.stderr}`)
    for (const name of fs.readdirSync(stateDir).filter((n) => /^gen-\d+$/.test(n)).sort()) {
      if (results.length >= wanted) break // several may have appeared since the last look
      if (seen.has(name)) continue
      const dir = path.join(stateDir, name)
      let data: string | undefined
      try {
        data = fs.readdirSync(dir).find((f) => f.endsWith('.data'))
      } catch {
        seen.add(name) // pruned before we looked
        continue
      }
      if (!data) continue
      seen.add(name)
      const r = spawnSync(sweep, ['check', path.join(dir, data)], { encoding: 'utf8' })
      if (r.status === 2) continue // pruned while we read it
      let verified: boolean | undefined
      if (verify) {
        const v = spawnSync(process.execPath, [cli, 'verify', '--state-dir', stateDir, name, '-q'], { encoding: 'utf8' })
        if (v.status !== 0 && !fs.existsSync(dir)) continue // pruned while we verified it
        verified = v.status === 0
      }
      results.push({ ok: r.status === 0, sweep: r.status === 0 ? Number(r.stdout.split(' ')[1]) : undefined, text: r.stdout.trim(), verified })
    }
    await new Promise((r) => setTimeout(r, 5))
  }
  return results
}

describe('periodic checkpoints of a running writer', () => {
  // Up to 200 checkpoints in 2 minutes (about 70 s on an idle machine; at
  // load 14 the same 200 took over 4 minutes), at least 30.
  test('sigstop: up to 200 checkpoints, every image is one instant and the writer kept going; none: images tear, and every one verifies', async () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-freeze-'))
    dirs.push(stateDir)
    const frozen = Container.shmkeep(stateDir, [sweep, '0x5eed', String(64 << 20)], ['--checkpoint-interval', '0.02', '--keep', '6', '--freeze', 'sigstop', '-q'])
    const images = await watchImages(stateDir, 200, frozen, 120_000)
    await frozen.stop(20)
    expect(images.length).toBeGreaterThanOrEqual(30)
    const torn = images.filter((i) => !i.ok)
    expect(torn.map((t) => t.text)).toEqual([])
    // The writer made progress across the checkpoints (it was resumed each time).
    const sweeps = images.map((i) => i.sweep!)
    expect(new Set(sweeps).size).toBeGreaterThan(images.length / 2)

    const loose = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-freeze-'))
    dirs.push(loose)
    const unfrozen = Container.shmkeep(loose, [sweep, '0x5eed', String(64 << 20)], ['--checkpoint-interval', '0.02', '--keep', '6', '--freeze', 'none', '-q'])
    const looseImages = await watchImages(loose, 10, unfrozen, 90_000, true)
    await unfrozen.stop(20)
    expect(looseImages.length).toBeGreaterThanOrEqual(5)
    // Without a freeze the copy of 64 MiB spans several sweeps: images tear,
    // and every one of them verifies (its checksums are those of its bytes).
    expect(looseImages.filter((i) => !i.ok).length).toBeGreaterThan(0)
    expect(looseImages.map((i) => i.verified)).toEqual(looseImages.map(() => true))
  }, 300_000)
})

describe('a container killed during a periodic checkpoint', () => {
  test('the next start restores the last complete checkpoint, not an older one and not a torn one', async () => {
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-freeze-'))
    dirs.push(stateDir)
    const app = path.join(binDir, 'legacy_app')
    const c = Container.shmkeep(stateDir, [app, 'serve', '0x99'], ['--checkpoint-interval', '0.05', '--keep', '3'])
    await c.waitFor(/checkpoint gen-000000000005/)
    // SIGKILL the whole container at some instant of the checkpoint cycle.
    await new Promise((r) => setTimeout(r, 37))
    c.child.kill('SIGKILL')
    await c.exited
    // What CURRENT names now is a complete generation: its data is what must come back.
    const current = fs.readFileSync(path.join(stateDir, 'CURRENT'), 'utf8').trim()
    const gen = path.join(stateDir, current)
    const data = fs.readdirSync(gen).find((f) => f.endsWith('.data'))!
    const saved = fs.readFileSync(path.join(gen, data)).subarray(0, 64).toString('latin1').replace(/\0.*$/s, '')
    expect(saved).toMatch(/^count:\d+$/)

    const reader = Container.shmkeep(stateDir, [path.join(binDir, 'shmpeer'), 'read', 'key:0x99', '0', '64'], ['--snapshot-on-exit', 'never'])
    const r = await reader.exited
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.replace(/\0.*$/s, '')).toBe(saved)
    expect(r.stderr).toContain(`from ${current}`)
  }, 60_000)
})

describe('--freeze=cgroup', () => {
  const usable = (() => {
    try {
      const mount = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2')?.split(' ')[1]
      if (!mount) return 'no cgroup2 mount here'
      fs.accessSync(path.join(mount, 'cgroup.procs'), fs.constants.W_OK)
      return ''
    } catch (e) {
      return `cgroup2 is not writable here (${(e as Error).message})`
    }
  })()
  test('every checkpoint is an image of one instant; shmkeep removes the cgroups it made', async (ctx) => {
    if (usable) ctx.skip(`--freeze=cgroup cannot be tested: ${usable}`)
    const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-freeze-'))
    dirs.push(stateDir)
    const c = Container.shmkeep(stateDir, [sweep, '0x5eee', String(16 << 20)], ['--checkpoint-interval', '0.05', '--keep', '6', '--freeze', 'cgroup', '-q'])
    const images = await watchImages(stateDir, 40, c, 90_000)
    const r = await c.stop(20)
    expect(r.status, r.stderr).toBe(0)
    expect(images.filter((i) => !i.ok).map((i) => i.text)).toEqual([])
    expect(new Set(images.map((i) => i.sweep)).size).toBeGreaterThan(10)
    // The two cgroups shmkeep made for the app and for itself are gone.
    const mount = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[2] === 'cgroup2')!.split(' ')[1]!
    const own = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))!.slice(3)
    expect(fs.readdirSync(path.join(mount, own)).filter((n) => n.startsWith('shmkeep-'))).toEqual([])
  }, 120_000)
})
