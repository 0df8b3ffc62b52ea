/**
 * Semaphore sets and message queues across container restarts under
 * `shmkeep run`: each "container" is a new IPC and PID namespace (unshare),
 * the state dir is carried over. The apps are real: a C fixture
 * (test/fixtures/semq.c), Perl's IPC::ShareLite and IPC::Shareable, Python's
 * sysv_ipc (Debian packages, installed by .ci/run).
 *
 * Keys of this file: 0x6b01xxxx (each container is a namespace of its own).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, test } from 'vitest'
import { binDir, have, run } from './helpers'
import { Container, shmkeepBin } from './e2e/container'
import { DOCKER_BOUNDING } from './snapkit'

const semq = path.join(binDir, 'semq')
const PY = '/usr/bin/python3' // Debian's python3, where python3-sysv-ipc installs
const perlHas = (mod: string) => run('perl', [`-M${mod}`, '-e1']).status === 0
const hasShareLite = perlHas('IPC::ShareLite')
const hasShareable = perlHas('IPC::Shareable')
const hasSysvIpc = run(PY, ['-c', 'import sysv_ipc']).status === 0
/** Tests that switch to uid 1000 need real root (not `unshare -U -r`, where only uid 0 is mapped). */
const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0

const scratch: string[] = []
const containers: Container[] = []
afterEach(() => {
  for (const c of containers.splice(0)) c.child.kill('SIGKILL')
  for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true })
})

function workDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-kinds-'))
  scratch.push(dir)
  // The state dir every test uses: run and restore never create it (a volume is mounted there).
  fs.mkdirSync(path.join(dir, 'state'), { mode: 0o700 })
  return dir
}

/** One container: `shmkeep run` as PID 1, to the app's end. */
async function runOnce(state: string, app: string[], runArgs: string[] = []) {
  const c = Container.shmkeep(state, app, ['--grace', '3', ...runArgs])
  containers.push(c)
  const r = await c.exited
  return r
}

function generationRecord(state: string): any {
  const name = fs.readFileSync(path.join(state, 'CURRENT'), 'utf8').trim()
  const text = fs.readFileSync(path.join(state, name, 'GENERATION'), 'utf8')
  return JSON.parse(text.slice(text.indexOf('\n') + 1))
}

describe('a C app keeps its semaphore set and its message queue across restarts', () => {
  test('the counter continues and the messages stay in order, with their types', async () => {
    const state = path.join(workDir(), 'state')
    for (let i = 1; i <= 3; i++) {
      const r = await runOnce(state, [semq, 'put', '0x6b010001'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`count ${i} qnum ${i}`)
      if (i > 1) expect(r.stderr).toMatch(/restored 0 segment\(s\), 1 semaphore set\(s\), 1 message queue\(s\) from gen-/)
    }
    const gen = generationRecord(state)
    expect(gen.objects.records.map((r: any) => [r.kind, r.key])).toEqual([
      ['sem', '0x6b010001'],
      ['msg', '0x6b010001'],
    ])
    const dump = await runOnce(state, [semq, 'dump', '0x6b010001'])
    expect(dump.stdout.trim().split('\n')).toEqual(['values 1 3', 'msg 1 msg 1', 'msg 2 msg 2', 'msg 3 msg 3'])
  })

  test('--kind shm leaves them out: the next container starts without them', async () => {
    const state = path.join(workDir(), 'state')
    expect((await runOnce(state, [semq, 'put', '0x6b010002'], ['--kind', 'shm'])).stdout.trim()).toBe('count 1 qnum 1')
    expect(generationRecord(state).objects).toBeUndefined()
    expect(fs.readdirSync(path.join(state, generationRecord(state).name))).toEqual(['GENERATION'])
    expect((await runOnce(state, [semq, 'put', '0x6b010002'], ['--kind', 'shm'])).stdout.trim()).toBe('count 1 qnum 1')
    // and with every kind again, what the last one left is kept
    expect((await runOnce(state, [semq, 'put', '0x6b010002'])).stdout.trim()).toBe('count 1 qnum 1')
    expect((await runOnce(state, [semq, 'put', '0x6b010002'])).stdout.trim()).toBe('count 2 qnum 2')
  })

  test('a damaged objects.data: the restore refuses it and falls back to the previous generation', async () => {
    const state = path.join(workDir(), 'state')
    await runOnce(state, [semq, 'put', '0x6b010003'], ['--keep', '0'])
    await runOnce(state, [semq, 'put', '0x6b010003'], ['--keep', '0'])
    const gen = generationRecord(state)
    const file = path.join(state, gen.name, 'objects.data')
    const bytes = fs.readFileSync(file)
    bytes[bytes.length - 1]! ^= 0xff
    fs.writeFileSync(file, bytes)
    const r = await runOnce(state, [semq, 'put', '0x6b010003'])
    expect(r.stderr).toMatch(new RegExp(`${gen.name} cannot be restored: msg 0x6b010003 \\(id \\d+\\): its bytes in objects.data fail their checksum`))
    expect(r.stdout.trim()).toBe('count 2 qnum 2')
  })
})

describe("Docker's 14 capabilities (no CAP_IPC_OWNER, no CAP_SYS_ADMIN)", () => {
  test.skipIf(!realRoot || !have('setpriv'))("a uid-1000 app's 0600 semaphore set and queue are read as their owner, saved and recreated as their creator", async () => {
    const state = path.join(workDir(), 'state')
    const asApp = ['setpriv', '--reuid', '1000', '--regid', '1000', '--clear-groups']
    const docker = (cmd: string[]) =>
      Container.start(['setpriv', `--bounding-set=${DOCKER_BOUNDING}`, '--inh-caps=-all', process.execPath, shmkeepBin, 'run', '--state-dir', state, '--grace', '3', '--', ...asApp, semq, ...cmd])
    for (let i = 1; i <= 3; i++) {
      const c = docker(['put', '0x6b010060'])
      containers.push(c)
      const r = await c.exited
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`count ${i} qnum ${i}`)
      if (i > 1) expect(r.stderr).toMatch(/restored 0 segment\(s\), 1 semaphore set\(s\), 1 message queue\(s\)/)
    }
    const gen = generationRecord(state)
    for (const rec of gen.objects.records) expect(rec).toMatchObject({ key: '0x6b010060', mode: 0o600, uid: 1000, gid: 1000, cuid: 1000, cgid: 1000 })
    expect(gen.objects.unsaved).toEqual([])
    const c = docker(['dump', '0x6b010060'])
    containers.push(c)
    expect((await c.exited).stdout.trim().split('\n')).toEqual(['values 1 3', 'msg 1 msg 1', 'msg 2 msg 2', 'msg 3 msg 3'])
  })
})

describe('a warm namespace (a container restarted inside its pod)', () => {
  test('live sets and queues of the saved generation are kept, not restored over (and the app starts)', () => {
    const state = path.join(workDir(), 'state')
    const runCmd = (...app: string[]) => ['unshare', '--pid', '--fork', '--mount-proc', '--kill-child', process.execPath, shmkeepBin, 'run', '--state-dir', state, '--grace', '3', '--', ...app].join(' ')
    // Two runs in one IPC namespace (the pod's); between them the app's state moves on.
    const script = [`${runCmd(semq, 'put', '0x6b010070')}`, `${semq} put 0x6b010070 >/dev/null`, `echo '--- second run' >&2`, `${runCmd(semq, 'put', '0x6b010070')}; echo "run2=$?"`].join('\n')
    const r = run('unshare', ['--ipc', 'sh', '-c', script])
    expect(r.stdout, r.stderr).toContain('run2=0')
    expect(r.stdout).toMatch(/count 1 qnum 1\ncount 3 qnum 3/)
    const second = r.stderr.split('--- second run\n')[1]!
    // Warm: the lineage record of the first run is in the namespace, so nothing is restored over the live objects.
    expect(second).toMatch(/nothing restored: this IPC namespace already holds the state of gen-000000000001/)
    expect(second).not.toMatch(/restored \d+ segment/)
  })
})

describe('ls, inspect and verify show the objects', () => {
  const cli = (...args: string[]) => run(process.execPath, [path.join(__dirname, '..', 'bin', 'shmkeep.js'), ...args])

  test('ls --kind lists live sets and queues; inspect and verify name the saved ones', async () => {
    const state = path.join(workDir(), 'state')
    await runOnce(state, [semq, 'put', '0x6b010050'])
    const ls = run('unshare', ['--ipc', 'sh', '-c', `${semq} put 0x6b010051 >/dev/null && ${process.execPath} ${path.join(__dirname, '..', 'bin', 'shmkeep.js')} ls --kind sem,msg --json`])
    const listed = JSON.parse(ls.stdout)
    expect(listed.segments).toEqual([])
    expect(listed.objects.map((o: any) => [o.kind, o.key])).toEqual([
      ['sem', '0x6b010051'],
      ['msg', '0x6b010051'],
    ])
    const text = cli('inspect', '-s', state).stdout
    expect(text).toMatch(/sem\s+0x6b010050\s+\d+\s+0600\s+0:0\s+0:0\s+2 semaphore\(s\)/)
    expect(text).toMatch(/msg\s+0x6b010050\s+\d+\s+0600\s+0:0\s+0:0\s+1 message\(s\), 5 B/)
    expect(JSON.parse(cli('inspect', '-s', state, '--json').stdout).generation.objects.records).toHaveLength(2)
    expect(cli('verify', '-s', state)).toMatchObject({ status: 0 })
    const gen = generationRecord(state)
    const file = path.join(state, gen.name, 'objects.data')
    const bytes = fs.readFileSync(file)
    bytes[0]! ^= 1
    fs.writeFileSync(file, bytes)
    const bad = cli('verify', '-s', state)
    expect(bad.status).toBe(1)
    expect(bad.stdout).toMatch(/DAMAGED[\s\S]*sem 0x6b010050 \(id \d+\): its bytes in objects.data fail their checksum/)
  })
})

describe('a SEM_UNDO lock held during a checkpoint, then SIGKILL', () => {
  test('default: the set is not restored and the app goes on; --sem-from-checkpoint=restore brings the lock back held', async () => {
    const state = path.join(workDir(), 'state')
    expect((await runOnce(state, [semq, 'put', '0x6b010010'])).status).toBe(0) // a first generation, taken at exit
    const c = Container.shmkeep(state, [semq, 'hold', '0x6b010010'], ['--grace', '3', '--checkpoint-interval', '0.3'])
    containers.push(c)
    await c.waitFor(/held/)
    await c.waitFor(/checkpoint gen-/)
    await c.signal('SIGKILL') // no final snapshot: the checkpoint is what is left
    await c.exited
    const gen = generationRecord(state)
    expect(gen.reason).toBe('checkpoint')
    expect(gen.objects.checkpoint).toBe(true)
    const copy = path.join(workDir(), 'state')
    fs.cpSync(state, copy, { recursive: true })

    const skip = await runOnce(state, [semq, 'trylock', '0x6b010010'])
    expect(skip.stderr).toMatch(/1 semaphore set\(s\) not restored: saved by a checkpoint/)
    expect(skip.stdout.trim()).toBe('locked')

    const held = await runOnce(copy, [semq, 'trylock', '0x6b010010'], ['--sem-from-checkpoint', 'restore'])
    expect(held.stderr).toMatch(/restored 0 segment\(s\), 1 semaphore set\(s\), 1 message queue\(s\)/)
    expect(held.stdout.trim()).toBe('busy') // held by a process that is gone: the app would wait forever
  })
})

describe('real clients from Debian', () => {
  test.skipIf(!hasShareLite)('Perl IPC::ShareLite: a counter continues across three restarts (its segment and semaphore set)', async () => {
    const state = path.join(workDir(), 'state')
    const script = `use strict; use warnings; use IPC::ShareLite qw(:lock);
      my $s = IPC::ShareLite->new(-key => 0x6b010020, -create => $ARGV[0], -destroy => 'no') or die "new: $!\\n";
      $s->lock(LOCK_EX); my $v = $s->fetch; my $n = (defined $v && $v ne '') ? $v : 0; $n++; $s->store($n); $s->unlock();
      print "count $n\\n";`
    const seen: string[] = []
    for (const create of ['yes', 'no', 'no', 'no']) {
      const r = await runOnce(state, ['perl', '-e', script, create])
      expect(r.status, r.stderr).toBe(0)
      seen.push(r.stdout.trim())
    }
    expect(seen).toEqual(['count 1', 'count 2', 'count 3', 'count 4'])
  })

  test("Perl core IPC::Semaphore and IPC::Msg: a counter and a queue of typed messages continue across restarts", async () => {
    const state = path.join(workDir(), 'state')
    const script = `use strict; use warnings; use IPC::SysV qw(IPC_CREAT IPC_NOWAIT S_IRUSR S_IWUSR); use IPC::Semaphore; use IPC::Msg;
      my $sem = IPC::Semaphore->new(0x6b010070, 2, S_IRUSR | S_IWUSR | IPC_CREAT) or die "semaphore: $!\\n";
      my $q = IPC::Msg->new(0x6b010070, S_IRUSR | S_IWUSR | IPC_CREAT) or die "queue: $!\\n";
      if ($ARGV[0] eq 'put') {
        $sem->op(0, 1, 0) or die "op: $!\\n"; my $n = $sem->getval(0);
        $q->snd($n, "perl $n", IPC_NOWAIT) or die "snd: $!\\n";
        print "count $n qnum ", $q->stat->qnum, "\\n";
      } else {
        print "values ", join(' ', $sem->getall), "\\n"; my $buf;
        while (defined(my $type = $q->rcv($buf, 64, 0, IPC_NOWAIT))) { print "$type $buf\\n" }
      }`
    for (let i = 1; i <= 3; i++) {
      const r = await runOnce(state, ['perl', '-e', script, 'put'])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`count ${i} qnum ${i}`)
    }
    const dump = await runOnce(state, ['perl', '-e', script, 'dump'])
    expect(dump.stdout.trim().split('\n')).toEqual(['values 3 0', '1 perl 1', '2 perl 2', '3 perl 3'])
  })

  test.skipIf(!hasShareLite)('(control) IPC::ShareLite with segments only (--kind shm) fails as the issue reported', async () => {
    const state = path.join(workDir(), 'state')
    const script = `use IPC::ShareLite; IPC::ShareLite->new(-key => 0x6b010021, -create => $ARGV[0], -destroy => 'no') or die "Failed to create share\\n"; print "ok\\n";`
    expect((await runOnce(state, ['perl', '-e', script, 'yes'], ['--kind', 'shm'])).stdout.trim()).toBe('ok')
    const r = await runOnce(state, ['perl', '-e', script, 'no'], ['--kind', 'shm'])
    expect(r.stderr).toMatch(/Failed to create share/)
  })

  test.skipIf(!hasShareable)('Perl IPC::Shareable: a tied hash counter continues across three restarts (create => 0)', async () => {
    const state = path.join(workDir(), 'state')
    const script = `use strict; use warnings; use IPC::Shareable;
      tie my %h, 'IPC::Shareable', { key => 0x6b010030, create => $ARGV[0], destroy => 0 } or die "tie failed\\n";
      (tied %h)->lock; $h{n}++; my $n = $h{n}; (tied %h)->unlock; print "count $n\\n";`
    const seen: string[] = []
    for (const create of ['1', '0', '0', '0']) {
      const r = await runOnce(state, ['perl', '-e', script, create])
      expect(r.status, r.stderr).toBe(0)
      seen.push(r.stdout.trim())
    }
    expect(seen).toEqual(['count 1', 'count 2', 'count 3', 'count 4'])
  })

  test.skipIf(!hasSysvIpc)('Python sysv_ipc: a semaphore and a queue of jobs survive; the consumer gets every job in order', async () => {
    const state = path.join(workDir(), 'state')
    const producer = `import sys, sysv_ipc
try:
    s = sysv_ipc.Semaphore(0x6b010040, sysv_ipc.IPC_CREX, mode=0o600, initial_value=1)
    q = sysv_ipc.MessageQueue(0x6b010041, sysv_ipc.IPC_CREX, mode=0o640)
except sysv_ipc.ExistentialError:
    s = sysv_ipc.Semaphore(0x6b010040)
    q = sysv_ipc.MessageQueue(0x6b010041)
s.undo = True
s.acquire(0)
n = q.current_messages + 1
q.send(("job %d" % n).encode(), block=False, type=n)
s.release()
print("queued", n, "value", s.value, "mode", oct(q.mode))`
    for (let i = 1; i <= 3; i++) {
      const r = await runOnce(state, [PY, '-c', producer])
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout.trim()).toBe(`queued ${i} value 1 mode 0o640`)
    }
    const consumer = `import sysv_ipc
q = sysv_ipc.MessageQueue(0x6b010041)
while q.current_messages:
    data, t = q.receive(block=False)
    print(t, data.decode())`
    const r = await runOnce(state, [PY, '-c', consumer])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n')).toEqual(['1 job 1', '2 job 2', '3 job 3'])
  })
})
