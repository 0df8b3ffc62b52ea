/**
 * `shmkeep demo`: the seeds' story on the user's own machine, in a few
 * seconds. A "container" (private IPC, PID and mount namespaces) writes
 * 'a'..'z' into key 0x162e and is stopped the way `docker stop` does it; a new
 * one reads the key back — with shmkeep, and then without it.
 */
import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { commonOptions, parse } from './common'
import { EXIT } from './errors'

const HELP = `Usage: shmkeep demo

Shows what shmkeep is for: a legacy C program keeps 'a'..'z' in SysV shared
memory (key 0x162e); its container is stopped and a new one started. With
shmkeep the new container reads "a b c ... z"; without it, nothing. Needs
root (for unshare's namespaces) and a C compiler (cc) for the example app.
Prints what happens, in the order it happens (no --json: it is a show).

  -h, --help            this help
  -V, --version         print shmkeep's version`

const root = path.resolve(__dirname, '..', '..')
const shmkeepBin = path.join(root, 'bin', 'shmkeep.js')
const CONTAINER = ['--ipc', '--pid', '--fork', '--mount-proc', '--kill-child']

function say(t0: number, text: string): void {
  process.stdout.write(`[${((performance.now() - t0) / 1000).toFixed(2).padStart(5)} s] ${text}\n`)
}

/**
 * A file that a container's stdout and stderr both write to, so that its
 * lines come back in the order they were written (shmkeep's log on stderr,
 * the app's output on stdout).
 */
function outputFile(): { fd: number; read(): string; close(): void } {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-demo-out-')), 'out')
  const fd = fs.openSync(file, 'w+')
  return {
    fd,
    read: () => fs.readFileSync(file, 'utf8'),
    close: () => {
      fs.closeSync(fd)
      fs.rmSync(path.dirname(file), { recursive: true, force: true })
    },
  }
}

/** Run a "container" to its end; its output, in order. */
function runContainer(argv: string[]): { status: number | null; out: string } {
  const out = outputFile()
  try {
    const r = spawnSync('unshare', [...CONTAINER, ...argv], { stdio: ['ignore', out.fd, out.fd] })
    return { status: r.status, out: out.read().trimEnd() }
  } finally {
    out.close()
  }
}

/** Start a container, wait until `ready` matches its log, then stop it as docker stop does. */
async function runAndStop(argv: string[], ready: RegExp, grace = 10): Promise<string> {
  const file = outputFile()
  const child = spawn('unshare', [...CONTAINER, ...argv], { stdio: ['ignore', file.fd, file.fd] })
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
  while (!ready.test(file.read())) {
    if (child.exitCode !== null) break
    await new Promise((r) => setTimeout(r, 20))
  }
  // TERM to the container's PID 1 (the child of unshare), wait, then KILL.
  const pid1 = Number(fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/)[0])
  process.kill(pid1, 'SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), grace * 1000)
  await exited
  clearTimeout(timer)
  const out = file.read().trimEnd()
  file.close()
  return out
}

const indent = (text: string) => text.split('\n').map((l) => `          | ${l}`).join('\n') + '\n'

export async function run(argv: string[]): Promise<number> {
  const { values } = parse(argv, { help: commonOptions.help })
  if (values.help) {
    process.stdout.write(HELP + '\n')
    return EXIT.ok
  }
  if (process.getuid?.() !== 0 || spawnSync('unshare', [...CONTAINER, 'true']).status !== 0) {
    process.stderr.write('shmkeep demo plays containers with `unshare --ipc --pid --mount-proc`, which needs root here: run it with sudo (or as root in a VM).\n')
    return EXIT.usage
  }
  const source = path.join(root, 'examples', 'legacy-app', 'counter.c')
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-demo-'))
  try {
    const app = path.join(work, 'counter')
    const cc = spawnSync('cc', ['-O2', '-o', app, source], { encoding: 'utf8' })
    if (cc.error || cc.status !== 0) {
      process.stderr.write(`shmkeep demo needs a C compiler to build its example app (${source}): ${cc.error ? 'no `cc` found — install gcc or clang' : cc.stderr}\n`)
      return EXIT.usage
    }
    const state = path.join(work, 'state')
    fs.mkdirSync(state, { mode: 0o700 }) // as a volume would be: run never creates its state dir
    const t0 = performance.now()
    say(t0, `built the legacy app ${source}`)
    say(t0, `with shmkeep (state dir ${state}):`)
    say(t0, 'container 1: the app writes a..z into key 0x162e and keeps running')
    const first = await runAndStop(
      [process.execPath, shmkeepBin, 'run', '--state-dir', state, '--', '/bin/sh', '-c', `${app} write-abc && echo 'app: wrote a..z' && exec sleep 600`],
      /app: wrote a\.\.z/,
    )
    process.stdout.write(indent(first))
    say(t0, 'container 1 stopped like `docker stop` (TERM to PID 1): shmkeep snapshotted the segment')
    say(t0, 'container 2: a new IPC namespace; shmkeep restores, then the reader runs:')
    const second = runContainer([process.execPath, shmkeepBin, 'run', '--state-dir', state, '--snapshot-on-exit', 'never', '--', app, 'read-abc'])
    process.stdout.write(indent(second.out))
    say(t0, 'without shmkeep:')
    runContainer([app, 'write-abc'])
    say(t0, 'container 1 wrote a..z and stopped; container 2 reads:')
    const bare = runContainer([app, 'read-abc'])
    process.stdout.write(indent(bare.out))
    say(t0, 'the segment died with the first container. That is what shmkeep keeps.')
    return second.status === 0 && /a b c d e f g h i j k l m n o p q r s t u v w x y z/.test(second.out) ? EXIT.ok : EXIT.failed
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}
