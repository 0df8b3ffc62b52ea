/**
 * Every ```ts example of docs/LIBRARY.md runs as written: each block is
 * compiled the way an app's tsc would (ES2022, ES module: top-level await and
 * `using` work on Node 20), imports 'shmkeep' from a node_modules link to this
 * package, and runs in namespaces of its own — IPC (its segments die with
 * it), mount (a tmpfs over /var/lib for the state dirs the examples name) and
 * network (loopback only: a server can take its port). An example must exit
 * 0 by itself; one that serves (an HTTP server with createShutdown) is
 * stopped with SIGTERM once it listens, as an orchestrator would, and must
 * then exit 0 too.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { canUnshare, have, root, tempDir } from './helpers'

const doc = path.join(root, 'docs', 'LIBRARY.md')
const why = !canUnshare('--ipc', '--mount', '--net')
  ? 'cannot make IPC, mount and network namespaces here (unshare --ipc --mount --net)'
  : !have('ip')
    ? 'no `ip` command to bring up loopback in the network namespace (Debian: iproute2)'
    : ''

/** The ```ts blocks of the page, with the line each starts on. */
function examples(): Array<{ line: number; code: string }> {
  const text = fs.readFileSync(doc, 'utf8')
  const out: Array<{ line: number; code: string }> = []
  for (const m of text.matchAll(/^```ts\n([\s\S]*?)^```$/gm)) {
    out.push({ line: text.slice(0, m.index).split('\n').length, code: m[1]! })
  }
  return out
}

let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
  fs.mkdirSync(path.join(tmp.dir, 'node_modules'))
  fs.symlinkSync(root, path.join(tmp.dir, 'node_modules', 'shmkeep'))
})
afterAll(() => tmp?.cleanup())

/** Ports the process listens on, from its own network namespace's /proc/PID/net/tcp{,6}. */
function listening(pid: number): number[] {
  const ports: number[] = []
  for (const f of ['tcp', 'tcp6']) {
    let text = ''
    try {
      text = fs.readFileSync(`/proc/${pid}/net/${f}`, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols[3] === '0A') ports.push(parseInt(cols[1]!.split(':')[1]!, 16)) // TCP_LISTEN
    }
  }
  return ports
}

function runExample(file: string, serves: boolean): Promise<{ status: number | null; signal: string | null; output: string }> {
  // unshare without --fork execs sh, and sh execs node: the pid we see is node's.
  const setup = 'mount -t tmpfs shmkeep-docs /var/lib && ip link set lo up && exec "$0" "$1"'
  const child = spawn('unshare', ['--ipc', '--mount', '--propagation', 'private', '--net', 'sh', '-c', setup, process.execPath, file], {
    cwd: tmp.dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  let poll: NodeJS.Timeout | undefined
  if (serves) {
    poll = setInterval(() => {
      if (listening(child.pid!).length > 0) {
        clearInterval(poll)
        child.kill('SIGTERM')
      }
    }, 100)
  }
  const limit = setTimeout(() => child.kill('SIGKILL'), 60_000)
  return new Promise((resolve) => {
    child.on('close', (status, signal) => {
      clearInterval(poll)
      clearTimeout(limit)
      resolve({ status, signal, output })
    })
  })
}

describe('docs/LIBRARY.md: every example runs as written', () => {
  test('the page has examples', (ctx) => {
    if (why) ctx.skip(why)
    expect(examples().length).toBeGreaterThanOrEqual(4)
  })

  for (const { line, code } of examples()) {
    const serves = /\.listen\(/.test(code)
    test(`the example at line ${line}${serves ? ' (serves; stopped with SIGTERM)' : ''}`, async (ctx) => {
      if (why) ctx.skip(why)
      const js = ts.transpileModule(code, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext } }).outputText
      const file = path.join(tmp.dir, `example-${line}.mjs`)
      fs.writeFileSync(file, js)
      const r = await runExample(file, serves)
      expect(r.signal, r.output).toBe(null)
      expect(r.status, r.output).toBe(0)
    }, 90_000)
  }
})
