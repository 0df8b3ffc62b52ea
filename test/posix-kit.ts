/**
 * "Containers" for the tests of POSIX objects: a new IPC, PID and mount
 * namespace (test/e2e/container.ts) whose /dev is a private tmpfs with the
 * few device nodes bound in from the machine's, its own tmpfs at /dev/shm
 * and its own mqueue file system at /dev/mqueue (mounted from inside the new
 * IPC namespace, so it lists that namespace's queues) — as runc and Docker
 * build them. The machine's /dev/shm and queues are never seen, and nothing
 * is created in the machine's /dev.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach } from 'vitest'
import { Container } from './e2e/container'

/** The shell lines that build the private /dev; `$SK_HOSTDEV` is an empty directory of the test's. */
export function privateDevScript(shmSize = '16m'): string {
  return [
    'set -e',
    'mount --bind /dev "$SK_HOSTDEV"',
    'mount -t tmpfs -o mode=755,size=1m tmpfs /dev',
    'for n in null zero full random urandom tty; do touch /dev/$n; mount --bind "$SK_HOSTDEV/$n" /dev/$n; done',
    'ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr',
    'umount "$SK_HOSTDEV"',
    'mkdir /dev/shm /dev/mqueue',
    // The source name `shm`, as container engines mount it (src/filter.ts: containerDevShm).
    `mount -t tmpfs -o mode=1777,size=${shmSize} shm /dev/shm`,
    'mount -t mqueue mqueue /dev/mqueue',
  ].join('\n')
}

/** A scratch directory for one container's mount of the machine's /dev (removed by the caller with the rest). */
export function hostDevDir(scratch: string[]): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-dev-'))
  scratch.push(d)
  return d
}

/**
 * Run `argv` as PID 1 of a container with private /dev/shm and /dev/mqueue;
 * `before` runs in it first (as root, with every capability), e.g. to seed objects.
 */
export function posixContainer(scratch: string[], argv: string[], o: { shmSize?: string; before?: string; env?: NodeJS.ProcessEnv } = {}): Container {
  const script = `${privateDevScript(o.shmSize)}\n${o.before ?? ''}\nexec "$@"`
  return Container.start(['sh', '-c', script, 'sh', ...argv], { SK_HOSTDEV: hostDevDir(scratch), ...o.env })
}

/**
 * The scratch directories and containers of one test file, removed and
 * killed after each test; `stateDir()` makes a fresh state dir (created, 0700,
 * as a mounted volume would be).
 */
export function testScratch(prefix: string): { scratch: string[]; containers: Container[]; stateDir(): string } {
  const scratch: string[] = []
  const containers: Container[] = []
  afterEach(() => {
    for (const c of containers.splice(0)) c.child.kill('SIGKILL')
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true })
  })
  const stateDir = () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
    scratch.push(dir)
    fs.mkdirSync(path.join(dir, 'state'), { mode: 0o700 })
    return path.join(dir, 'state')
  }
  return { scratch, containers, stateDir }
}
