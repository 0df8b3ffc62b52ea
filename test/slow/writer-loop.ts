/**
 * A live writer and repeated `shmkeep snapshot`s (docs: issue 10, "checksum
 * what you write"): the C fixture `writer run` bumps a per-page counter all
 * over a segment while snapshots run, one after another. Every generation
 * must verify and restore, and every restored page's counter must lie
 * between its values just before and just after that snapshot: a value the
 * writer really stored while the snapshot ran.
 *
 * Used by test/writer.test.ts (a few snapshots, in `npm test`) and
 * test/slow/writer.test.ts (30 of them).
 */
import { spawn, spawnSync } from 'node:child_process'
import path from 'node:path'
import { expect } from 'vitest'
import { binDir, root, run, tempDir } from '../helpers'

const writer = path.join(binDir, 'writer')
const cli = path.join(root, 'bin', 'shmkeep.js')

/** Each page's counter, from `writer dump KEY` (run by `argv` when given). */
function counters(key: string, argv = [writer, 'dump', key]): Uint32Array {
  const r = spawnSync(argv[0]!, argv.slice(1), { timeout: 120_000, maxBuffer: 1 << 26 })
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${String(r.stderr)}`)
  const b = r.stdout as Buffer
  return new Uint32Array(b.buffer, b.byteOffset, b.length / 4)
}

export async function writerLoop(key: string, size: number, snapshots: number): Promise<void> {
  const { dir: stateDir, cleanup } = tempDir()
  const child = spawn(writer, ['run', key, String(size)], { stdio: ['ignore', 'pipe', 'inherit'] })
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject)
      child.once('exit', (code) => reject(new Error(`writer exited with ${code}`)))
      child.stdout!.once('data', () => resolve())
    })
    let moved = 0
    for (let i = 0; i < snapshots; i++) {
      const before = counters(key)
      const snap = run(process.execPath, [cli, 'snapshot', '--state-dir', stateDir, '--key', key, '--json', '-q'])
      const after = counters(key)
      expect(snap.stderr).toBe('')
      expect(snap.status).toBe(0)
      const report = JSON.parse(snap.stdout)
      const generation: string = report.generation
      expect(report.current).toBe(true)

      const verify = run(process.execPath, [cli, 'verify', '--state-dir', stateDir, generation, '-q'])
      expect(verify.stderr + verify.stdout).not.toMatch(/fail|bad|damaged/i)
      expect(verify.status).toBe(0)

      // Restore in a fresh IPC namespace and read the counters there.
      const script = '"$0" "$1" restore --state-dir "$2" --generation "$3" -q >&2 && exec "$4" dump "$5"'
      const restored = counters(key, ['unshare', '--ipc', 'sh', '-c', script, process.execPath, cli, stateDir, generation, writer, key])
      expect(restored.length).toBe(before.length)
      const wrong: string[] = []
      for (let p = 0; p < restored.length; p++) {
        if (restored[p]! < before[p]! || restored[p]! > after[p]!) wrong.push(`page ${p}: ${restored[p]} not in [${before[p]}, ${after[p]}]`)
        if (after[p] !== before[p]) moved++
      }
      expect(wrong.slice(0, 5)).toEqual([])
    }
    // The writer really wrote during the snapshots (else the test proves nothing).
    expect(moved).toBeGreaterThan(0)
  } finally {
    child.kill('SIGTERM')
    await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)))
    cleanup()
  }
}
