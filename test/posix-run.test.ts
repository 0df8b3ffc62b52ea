/**
 * POSIX shared memory objects and POSIX message queues across container
 * restarts under `shmkeep run`: each "container" is a new IPC, PID and mount
 * namespace with its own tmpfs at /dev/shm and its own mqueue at /dev/mqueue
 * (test/posix-kit.ts), the state dir is carried over. The apps are real: a C
 * fixture (test/fixtures/posixapp.c), Python's multiprocessing.shared_memory.
 */
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { binDir, run } from './helpers'
import { shmkeepBin } from './e2e/container'
import { posixContainer, testScratch } from './posix-kit'
import { DOCKER_BOUNDING, have, realRoot } from './snapkit'

const posixapp = path.join(binDir, 'posixapp')
const PY = '/usr/bin/python3'
const shmkeep = [process.execPath, shmkeepBin]

const { scratch, containers, stateDir } = testScratch('shmkeep-posix-')

async function inContainer(argv: string[], o: Parameters<typeof posixContainer>[2] = {}) {
  const c = posixContainer(scratch, argv, o)
  containers.push(c)
  return c.exited
}

/** `shmkeep run` as PID 1 of a container with private /dev/shm and /dev/mqueue. */
function runApp(state: string, app: string[], o: { runArgs?: string[] } & Parameters<typeof posixContainer>[2] = {}) {
  return inContainer([...shmkeep, 'run', '--state-dir', state, '--grace', '3', ...(o.runArgs ?? []), '--', ...app], o)
}

function generationRecord(state: string): any {
  const name = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
  const text = fs.readFileSync(path.join(state, name, 'GENERATION'), 'utf8')
  return JSON.parse(text.slice(text.indexOf('\n') + 1))
}

describe('a C app keeps its POSIX shm object, named semaphore and message queue across restarts', () => {
  test('contents and holes, mode, queue attributes, message order and priorities', async () => {
    const state = stateDir()
    for (let i = 1; i <= 3; i++) {
      const r = await runApp(state, [posixapp, 'put', 'app'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`count ${i}`)
      if (i > 1) expect(r.stderr).toMatch(/restored 0 segment\(s\), 1 POSIX message queue\(s\), 2 POSIX shm object\(s\) from gen-/)
      // The log names the /dev/shm used (a tmpfs of this container's mount namespace).
      expect(r.stderr).toMatch(/POSIX shm objects from \/dev\/shm \(tmpfs of 16\.0 MiB, .* mnt:\[\d+\]\)/)
    }
    const gen = generationRecord(state)
    expect(gen.objects.records.map((r: any) => [r.kind, r.key])).toEqual([
      ['mqueue', '/app'],
      ['posix-shm', '/app'],
      ['posix-shm', '/sem.app'],
    ])
    const shmRec = gen.objects.records.find((r: any) => r.kind === 'posix-shm' && r.key === '/app')
    // Only the two pages written are stored: the rest of the 1 MiB are holes.
    expect(shmRec.attrs).toMatchObject({ size: 1 << 20, data: 8192, runs: 2 })
    expect(gen.objects.limits.mqueue).toMatchObject({ msg_max: expect.any(Number), msgsize_max: expect.any(Number) })
    expect(gen.objects.limits['posix-shm']).toEqual({ size: 16 << 20 })
    const dump = await runApp(state, [posixapp, 'dump', 'app'])
    expect(dump.status, dump.stderr).toBe(0)
    expect(dump.stdout.trim().split('\n')).toEqual([
      'size 1048576 count 3 tail 3',
      'mode 0600 uid 0 gid 0',
      'runs 0+4096 598016+4096',
      'mq maxmsg 8 msgsize 64 curmsgs 3',
      // Delivery order: highest priority first, in order of sending within one.
      'msg 2 msg 2',
      'msg 1 msg 1',
      'msg 0 msg 3',
      'sem 3',
    ])
  })

  test('--kind without the POSIX kinds leaves them out; shmkeep not PID 1 leaves /dev/shm alone unless asked', async () => {
    const state = stateDir()
    const r = await runApp(state, [posixapp, 'put', 'app'], { runArgs: ['--kind', 'shm,sem,msg'] })
    expect(r.status, r.stderr).toBe(0)
    expect(generationRecord(state).objects).toBeUndefined()
    // `shmkeep snapshot` from a script (not PID 1, not a final snapshot of run): neither kind unless named.
    const s2 = stateDir()
    const script = `${posixapp} put app >/dev/null && ${shmkeep.join(' ')} snapshot --state-dir ${s2} && ${shmkeep.join(' ')} snapshot --state-dir ${s2} --kind posix-shm,mqueue --force`
    const r2 = await inContainer(['sh', '-c', script])
    expect(r2.status, r2.stderr).toBe(0)
    const names = fs.readdirSync(s2).filter((n) => n.startsWith('gen-')).sort()
    expect(names).toHaveLength(2)
    const first = JSON.parse(fs.readFileSync(path.join(s2, names[0]!, 'GENERATION'), 'utf8').replace(/^[^\n]*\n/, ''))
    expect(first.objects).toBeUndefined()
    expect(generationRecord(s2).objects.records.map((x: any) => x.kind).sort()).toEqual(['mqueue', 'posix-shm', 'posix-shm'])
  })

  test('a directory, a FIFO and a symlink in /dev/shm are skipped and named', async () => {
    const state = stateDir()
    const before = 'mkdir /dev/shm/adir; mkfifo /dev/shm/afifo; ln -s /etc/hostname /dev/shm/alink'
    const r = await runApp(state, [posixapp, 'put', 'app'], { before })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stderr).toMatch(/POSIX shm objects: not saved, not regular files: adir \(a directory\), afifo \(a FIFO\), alink \(a symlink\)/)
    expect(generationRecord(state).objects.records.filter((x: any) => x.kind === 'posix-shm').map((x: any) => x.key)).toEqual(['/app', '/sem.app'])
  })
})

describe('restores that cannot be done leave nothing behind', () => {
  test('too little free space in /dev/shm: refused before anything is created', async () => {
    const state = stateDir()
    const big = 'head -c 3000000 /dev/urandom > /dev/shm/big && chmod 600 /dev/shm/big'
    expect((await runApp(state, [posixapp, 'put', 'app'], { before: big })).status).toBe(0)
    // A smaller /dev/shm (docker run --shm-size=1m): the restore refuses, naming the numbers.
    const script = `${shmkeep.join(' ')} restore --state-dir ${state} --kind all; echo "status $?"; ls -A /dev/shm /dev/mqueue`
    const r = await inContainer(['sh', '-c', script], { shmSize: '1m' })
    expect(r.stderr).toMatch(/POSIX shm object\(s\) need 2\.\d MiB in \/dev\/shm, which has 1\.0 MiB free of 1\.0 MiB: give the container a larger \/dev\/shm/)
    expect(r.stdout).toMatch(/status [1-9]/)
    expect(r.stdout.replace(/status \d+\n/, '').trim().split('\n')).toEqual(['/dev/mqueue:', '', '/dev/shm:'])
  })

  test('a failure while creating POSIX objects removes the queue made before them', async () => {
    const state = stateDir()
    expect((await runApp(state, [posixapp, 'put', 'app'])).status).toBe(0)
    // The restore's temporary name is taken: its O_EXCL create fails after the queue is made.
    const script = `sh -c 'touch /dev/shm/.shmkeep-restore-$$-app; exec ${shmkeep.join(' ')} restore --state-dir ${state} --kind all'; echo "status $?"; ls -A /dev/shm /dev/mqueue`
    const r = await inContainer(['sh', '-c', script])
    expect(r.stderr).toMatch(/EEXIST/)
    expect(r.stdout).toMatch(/status [1-9]/)
    const listing = r.stdout.replace(/status \d+\n/, '').trim().split('\n')
    expect(listing[0]).toBe('/dev/mqueue:')
    expect(listing[1]).toBe('')
    expect(listing[2]).toBe('/dev/shm:')
    expect(listing.slice(3)).toEqual([expect.stringMatching(/^\.shmkeep-restore-\d+-app$/)])
  })
})

describe('a restore killed while it writes POSIX objects', () => {
  test('the next restore removes what it left (temporary files, the queue) and restores everything once', async () => {
    const state = stateDir()
    // A 24 MiB object of data besides the app's: the killed restore is caught while writing it.
    const big = 'head -c 25165824 /dev/urandom > /dev/shm/big'
    expect((await runApp(state, [posixapp, 'put', 'app'], { before: big, shmSize: '64m' })).status).toBe(0)
    const restore = `${shmkeep.join(' ')} restore --state-dir ${state} --kind all`
    const script = [
      `${restore} & P=$!`,
      // SIGKILL as soon as a temporary file of the restore shows up (or it has ended).
      `while kill -0 $P 2>/dev/null && ! ls -A /dev/shm | grep -q '^\\.shmkeep-restore-'; do :; done`,
      'kill -9 $P 2>/dev/null; wait $P; echo "killed $?"',
      'echo "left: $(ls -A /dev/shm | tr "\\n" " ")"',
      `${restore} --on-conflict skip >/dev/null 2>/tmp/second.err; echo "second $?"; cat /tmp/second.err >&2`,
      'echo "after: $(ls -A /dev/shm | tr "\\n" " ")"',
      `${posixapp} dump app`,
    ].join('\n')
    const r = await inContainer(['sh', '-c', script], { shmSize: '64m' })
    const out = r.stdout
    if (/killed 137/.test(out) && /left: .*\.shmkeep-restore-/.test(out)) {
      // Killed mid-way: the second restore says what it removed.
      expect(r.stderr).toMatch(/a restore of gen-000000000001 was killed in this namespace; removed the 0 segment\(s\) and [1-9]\d* other object\(s\)/)
    }
    expect(out).toMatch(/^second 0$/m)
    // Every object once, no temporary file left, the contents exact.
    expect(/^after: (.*)$/m.exec(out)![1]!.trim().split(' ').sort()).toEqual(['app', 'big', 'sem.app'])
    expect(out).toMatch(/^size 1048576 count 1 tail 1$/m)
    expect(out).toMatch(/^msg 1 msg 1$/m)
  })
})

describe('a large POSIX object is streamed, never whole in memory', () => {
  // Peak RSS of a child, from the kernel's rusage (python3: Debian's, as for shared_memory below).
  const rss = `rss() { ${PY} -c 'import resource,subprocess,sys; r=subprocess.run(sys.argv[2:]); print(sys.argv[1], r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' "$@"; }`
  test.skipIf(!fs.existsSync(PY))('96 MiB of data in a 1 GiB sparse object: snapshot and restore peak far below it; bytes and holes exact', async () => {
    const state = stateDir()
    const script = [
      rss,
      'truncate -s 1G /dev/shm/big && dd if=/dev/urandom of=/dev/shm/big bs=1M count=96 seek=100 conv=notrunc status=none',
      `rss snapshot ${shmkeep.join(' ')} snapshot -q --state-dir ${state} --kind posix-shm`,
      // The data region only: hashing the holes would read 1 GiB of zeros.
      'sum() { echo "sum $(dd if=/dev/shm/big bs=1M skip=100 count=96 status=none | sha256sum)"; }',
      'sum; rm /dev/shm/big',
      // A new IPC namespace: this one's lineage record would make it warm.
      `rss restore unshare --ipc ${shmkeep.join(' ')} restore -q --state-dir ${state} --kind posix-shm`,
      'sum; echo "size $(stat -c %s /dev/shm/big) used $(du -m /dev/shm/big | cut -f1)"',
    ].join('\n')
    const r = await inContainer(['sh', '-c', script], { shmSize: '128m' })
    expect(r.status, r.stderr).toBe(0)
    const peak = (what: string) => {
      const m = new RegExp(`^${what} (\\d+) (\\d+)$`, 'm').exec(r.stdout)
      expect(m?.[1], `${what}: ${r.stdout}${r.stderr}`).toBe('0')
      return Number(m![2])
    }
    const [snap, rest] = [peak('snapshot'), peak('restore')]
    console.log(`peak RSS with 96 MiB of data: snapshot ${snap} MiB, restore ${rest} MiB`)
    // Held whole, the data alone would be 96 MiB (and was copied once more when packed).
    expect(snap).toBeLessThan(90)
    expect(rest).toBeLessThan(90)
    const sums = [...r.stdout.matchAll(/^sum (\S+)/gm)].map((m) => m[1])
    expect(sums).toHaveLength(2)
    expect(sums[0]).toBe(sums[1])
    expect(r.stdout).toMatch(/^size 1073741824 used 96$/m)
  })
})

describe('a warm namespace keeps its live objects', () => {
  test('a /dev/shm that outlived the IPC namespace: its saved objects are live, nothing is restored over them', async () => {
    const state = stateDir()
    const once = `${shmkeep.join(' ')} run --state-dir ${state} --grace 3 --kind posix-shm -- ${posixapp} put app`
    // The second run is in a new IPC namespace (no lineage record, no queue) with the same /dev/shm.
    const r = await inContainer(['sh', '-c', `${once} && unshare --ipc ${once}`])
    // Without a lineage record its snapshot goes beside CURRENT (exit 123): the lineage rule of src/state/side.ts.
    expect(r.status, r.stderr).toBe(123)
    expect(r.stdout.trim().split('\n')).toEqual(['count 1', 'count 2'])
    expect(r.stderr).toMatch(/objects saved in gen-000000000001 are live here already: POSIX shm object \/app, POSIX shm object \/sem\.app/)
  })
})

describe("Docker's 14 capabilities", () => {
  test.skipIf(!realRoot || !have('setpriv'))("a uid-1000 app's 0600 POSIX object and queue are saved and restored with their owner", async () => {
    const state = stateDir()
    // shmkeep itself under Docker's bounding set (the mounts above happen with every capability, as runc's do).
    const dockerRun = (cmd: string[]) =>
      inContainer(['setpriv', `--bounding-set=${DOCKER_BOUNDING}`, '--inh-caps=-all', ...shmkeep, 'run', '--state-dir', state, '--grace', '3', '--', 'setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups', posixapp, ...cmd])
    for (let i = 1; i <= 2; i++) {
      const r = await dockerRun(['put', 'app'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`count ${i}`)
    }
    const gen = generationRecord(state)
    for (const rec of gen.objects.records) expect(rec).toMatchObject({ mode: 0o600, uid: 1000, gid: 1000 })
    expect(gen.objects.unsaved).toEqual([])
    const dump = await dockerRun(['dump', 'app'])
    expect(dump.status, dump.stderr).toBe(0)
    expect(dump.stdout).toMatch(/^size 1048576 count 2 tail 2\nmode 0600 uid 1000 gid 1000\n/)
    expect(dump.stdout).toMatch(/mq maxmsg 8 msgsize 64 curmsgs 2\nmsg 2 msg 2\nmsg 1 msg 1\nsem 2\n/)
  })
})

describe('limits of the new namespace (fs.mqueue.msg_max), without CAP_SYS_RESOURCE', () => {
  test.skipIf(!realRoot || !have('setpriv'))('lower: one line names them and mq_maxmsg is lowered when the messages fit; else the restore refuses before creating anything', async () => {
    const state = stateDir()
    for (let i = 1; i <= 3; i++) expect((await runApp(state, [posixapp, 'put', 'app'])).status).toBe(0)
    const dockerRun = (msgMax: number, cmd: string[]) =>
      inContainer(['setpriv', `--bounding-set=${DOCKER_BOUNDING}`, '--inh-caps=-all', ...shmkeep, 'run', '--state-dir', state, '--grace', '3', '--', posixapp, ...cmd], { before: `echo ${msgMax} > /proc/sys/fs/mqueue/msg_max` })
    // msg_max 2 < the 3 messages: refused, the app is not started, nothing is left.
    const refused = await dockerRun(2, ['dump', 'app'])
    expect(refused.status).toBe(125)
    expect(refused.stderr).toMatch(/POSIX message queue \/app holds 3 messages, above fs\.mqueue\.msg_max \(2\) here/)
    expect(refused.stdout).toBe('')
    // msg_max 5: the queue comes back with mq_maxmsg 5 and its 3 messages, and the log says so.
    const lowered = await dockerRun(5, ['dump', 'app'])
    expect(lowered.status, lowered.stderr).toBe(0)
    expect(lowered.stderr).toMatch(/this namespace's mqueue limits are lower than where the generation was saved: msg_max 5 < 10/)
    expect(lowered.stderr).toMatch(/mqueue \/app: mq_maxmsg 8 lowered to fs\.mqueue\.msg_max \(5\)/)
    expect(lowered.stdout).toMatch(/^mq maxmsg 5 msgsize 64 curmsgs 3$/m)
  })
})

describe("Python's multiprocessing.shared_memory", () => {
  const hasPy = run(PY, ['-c', 'from multiprocessing import shared_memory']).status === 0
  test.skipIf(!hasPy)('a counter in a SharedMemory block continues across stop and start', async () => {
    const state = stateDir()
    // A long-lived app keeps its block: before Python 3.13 the resource
    // tracker unlinks it when the creating process exits, so unregister it.
    const script = [
      'from multiprocessing import shared_memory, resource_tracker',
      'try:',
      "    m = shared_memory.SharedMemory(name='pycounter', create=True, size=4096)",
      'except FileExistsError:',
      "    m = shared_memory.SharedMemory(name='pycounter')",
      "resource_tracker.unregister(m._name, 'shared_memory')",
      "n = int.from_bytes(bytes(m.buf[:4]), 'little') + 1",
      "m.buf[:4] = n.to_bytes(4, 'little')",
      'print(n)',
      'm.close()',
    ].join('\n')
    for (let i = 1; i <= 3; i++) {
      const r = await runApp(state, [PY, '-c', script])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(String(i))
    }
  })
})
