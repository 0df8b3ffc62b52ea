/**
 * Small helpers shared by the test files: paths, temp folders, and child
 * processes that run a snippet against the built package (dist/) — for what
 * must not happen inside the test process itself (a crash, --expose-gc, a
 * namespace of its own).
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

export const root = path.resolve(__dirname, '..')
export const binDir = path.join(root, 'test', '.tmp', 'bin')
/** The built package (test/run.mjs runs tsc before vitest, so it is current). */
export const dist = path.join(root, 'dist', 'index.js')
export const shmpeer = path.join(binDir, 'shmpeer')

/** A fresh folder under the system temp dir; removed by the returned function. */
export function tempDir(): { dir: string; cleanup(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-test-'))
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) }
}

export interface ChildResult {
  status: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  pid: number
  /** The last line of stdout parsed as JSON (undefined when it is not JSON). */
  json: any
}

function lastJson(stdout: string): unknown {
  const lines = stdout.trim().split('\n')
  try {
    return JSON.parse(lines[lines.length - 1] ?? '')
  } catch {
    return undefined
  }
}

/** Run a command and collect what it did. */
export function run(cmd: string, args: string[], options: SpawnSyncOptions = {}): ChildResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, ...options })
  const stdout = String(r.stdout ?? '')
  return {
    status: r.status,
    signal: r.signal,
    stdout,
    stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : ''),
    pid: r.pid ?? 0,
    json: lastJson(stdout),
  }
}

/**
 * Run `code` in a child node process with `lib` bound to the built package
 * (`const lib = require(dist)`). `prefix` goes before node (e.g. `unshare --ipc`).
 */
export function runNode(code: string, { nodeArgs = [] as string[], prefix = [] as string[], args = [] as string[], env = {} as NodeJS.ProcessEnv } = {}): ChildResult {
  const script = `const lib = require(${JSON.stringify(dist)});\n${code}`
  const argv = [...prefix, process.execPath, ...nodeArgs, '-e', script, '--', ...args]
  return run(argv[0]!, argv.slice(1), { env: { ...process.env, ...env } })
}

/** Whether `unshare FLAGS true` works here (we run as root in the test namespace). */
export function canUnshare(...flags: string[]): boolean {
  return run('unshare', [...flags, 'true']).status === 0
}

/** Whether a program is on PATH. */
export function have(program: string): boolean {
  return run('sh', ['-c', `command -v ${program}`]).status === 0
}
