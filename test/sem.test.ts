/**
 * System V semaphore sets, as a Node developer uses them: sem.get / stat /
 * list / values / setValues / waiters / op / set / remove / limits.
 *
 * Keys of this file: 0x5e00xxxx. Every set a test makes is removed in
 * afterEach. We run in the private IPC namespace of test/run.mjs.
 */
import { afterEach, describe, expect, test } from 'vitest'
import { sem } from '../src/index'
import { have, run, runNode } from './helpers'

/** Tests that switch to uid 1000/2000 need real root (not `unshare -U -r`, where only uid 0 is mapped). */
const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0

let ids: number[] = []
function create(key: number, nsems = 3, options: sem.GetOptions = {}): number {
  const id = sem.get(key, { nsems, create: true, exclusive: true, ...options })
  ids.push(id)
  return id
}
afterEach(() => {
  for (const id of ids) {
    try {
      sem.remove(id)
    } catch {
      // removed by the test
    }
  }
  ids = []
})

function caught(fn: () => unknown): any {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

describe('sem: arguments are checked before any system call', () => {
  test('bad keys, counts, modes and options', () => {
    expect(() => sem.get('nope' as any)).toThrow(TypeError)
    expect(() => sem.get(0x5e000001, { create: true })).toThrow(/nsems is required/)
    expect(() => sem.get(0x5e000001, { nsems: -1 })).toThrow(RangeError)
    expect(() => sem.get(0x5e000001, { nsems: 1.5 })).toThrow(TypeError)
    expect(() => sem.get(0x5e000001, { mode: 0o1777 })).toThrow(RangeError)
    expect(() => sem.get(0x5e000001, { size: 1 } as any)).toThrow(/unknown option "size"/)
    expect(() => sem.stat(-1)).toThrow(RangeError)
    expect(() => sem.setValues(0, [1, -1])).toThrow(RangeError)
    expect(() => sem.setValues(0, 'x' as any)).toThrow(TypeError)
    expect(() => sem.op(0, [])).toThrow(TypeError)
    expect(() => sem.op(0, [{ num: 0, op: 40000 }])).toThrow(RangeError)
    expect(() => sem.op(0, [{ num: 0, op: 1, wait: true } as any])).toThrow(/unknown option "wait"/)
    expect(() => sem.set(0, { qbytes: 1 } as any)).toThrow(TypeError)
    expect(() => sem.remove(0, { uid: 1 } as any)).toThrow(TypeError)
    // nothing was created by any of these
    expect(sem.list().filter((s) => s.key >>> 16 === 0x5e00)).toEqual([])
  })

  test('nsems above SEMMSL is refused with the limit named', () => {
    const { semmsl } = sem.limits()
    expect(() => sem.get(0x5e000002, { nsems: Math.min(semmsl + 1, 0xffff), create: true })).toThrow(semmsl + 1 > 0xffff ? RangeError : /SEMMSL/)
  })
})

describe('sem.get / stat / list', () => {
  test('creates a set: stat and ipcs agree; open by key finds it; EEXIST with exclusive', () => {
    const id = create(0x5e000010, 4, { mode: 0o640 })
    const st = sem.stat(id)
    expect(st).toMatchObject({ id, key: 0x5e000010, nsems: 4, mode: 0o640, uid: 0, gid: 0, cuid: 0, cgid: 0, otime: 0 })
    expect(st.ctime).toBeGreaterThan(0)
    expect(sem.get('0x5e000010')).toBe(id)
    expect(caught(() => sem.get(0x5e000010, { nsems: 4, create: true, exclusive: true }))).toMatchObject({ code: 'EEXIST', syscall: 'semget' })
    const e = caught(() => sem.get(0x5e00001f))
    expect(e).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'semget' })
    expect(e.message).toContain('0x5e00001f')
    expect(sem.list().find((s) => s.id === id)).toEqual(st)
    expect(sem.scan().complete).toBe(true)
    if (have('ipcs')) {
      const out = run('ipcs', ['-s']).stdout
      expect(out).toMatch(new RegExp(`0x5e000010\\s+${id}\\s+\\S+\\s+640\\s+4`))
    }
  })

  test('an id that does not exist → EINVAL naming the id', () => {
    const e = caught(() => sem.stat(0x7ffffff0))
    expect(e).toMatchObject({ code: 'EINVAL', syscall: 'semctl' })
    expect(e.message).toContain(`sem id ${0x7ffffff0}`)
  })

  test('limits are kernel.sem, and count our sets', () => {
    const before = sem.limits()
    const [semmsl, semmns, semopm, semmni] = (run('cat', ['/proc/sys/kernel/sem']).stdout.trim().split(/\s+/).map(Number)) as number[]
    expect(before).toMatchObject({ semmsl, semmns, semopm, semmni, semvmx: 32767 })
    create(0x5e000011, 5)
    expect(sem.limits()).toMatchObject({ sets: before.sets + 1, semaphores: before.semaphores + 5 })
  })

  test.skipIf(!realRoot)('create as another uid/gid: the creator ids are theirs; a 0600 set is theirs to read', () => {
    const id = create(0x5e000012, 2, { uid: 1000, gid: 1001, mode: 0o600 })
    expect(sem.stat(id)).toMatchObject({ uid: 1000, gid: 1001, cuid: 1000, cgid: 1001 })
    expect(sem.values(id, { uid: 1000, gid: 1001 })).toEqual([0, 0])
    expect(caught(() => sem.values(id, { uid: 2000, gid: 2000 }))).toMatchObject({ code: 'EACCES', syscall: 'semctl' })
    expect(caught(() => sem.stat(id, { uid: 2000, gid: 2000 }))).toMatchObject({ code: 'EACCES' })
    // listed whatever its mode (SEM_STAT_ANY)
    expect(sem.list().some((s) => s.id === id)).toBe(true)
    expect(process.geteuid!()).toBe(0)
  })
})

describe('sem.values / setValues / op / waiters', () => {
  test('SETALL then GETALL gives the values back; the count must match nsems', () => {
    const id = create(0x5e000020, 3)
    expect(sem.values(id)).toEqual([0, 0, 0])
    sem.setValues(id, [7, 0, 32767])
    expect(sem.values(id)).toEqual([7, 0, 32767])
    expect(() => sem.setValues(id, [1, 2])).toThrow(/has 3 semaphore/)
    expect(() => sem.setValues(id, [1, 2, 32768])).toThrow(/SEMVMX/)
    expect(sem.values(id)).toEqual([7, 0, 32767])
    expect(sem.waiters(id).map((w) => w.pid)).toEqual([process.pid, process.pid, process.pid])
  })

  test('op never blocks: false when it would wait, and nothing changes', () => {
    const id = create(0x5e000021, 2)
    sem.setValues(id, [1, 0])
    expect(sem.op(id, [{ num: 0, op: -1 }])).toBe(true)
    expect(sem.op(id, [{ num: 0, op: -1 }])).toBe(false)
    // all or nothing: the first would succeed, the second cannot
    expect(sem.op(id, [{ num: 1, op: 2 }, { num: 0, op: -1 }])).toBe(false)
    expect(sem.values(id)).toEqual([0, 0])
    expect(caught(() => sem.op(id, [{ num: 5, op: 1 }]))).toMatchObject({ code: 'EFBIG', syscall: 'semop' })
  })

  test('a SEM_UNDO lock taken by a process is given back when it exits; ncnt shows a waiter', () => {
    const id = create(0x5e000022, 1, { mode: 0o666 })
    sem.setValues(id, [1])
    const r = runNode(`const id = ${id}; if (!lib.sem.op(id, [{ num: 0, op: -1, undo: true }])) process.exit(3); console.log(JSON.stringify(lib.sem.values(id)))`)
    expect(r.stderr).toBe('')
    expect(r.json).toEqual([0])
    expect(sem.values(id)).toEqual([1])
    expect(sem.waiters(id)[0]).toMatchObject({ ncnt: 0, zcnt: 0 })
  })
})

describe('sem.set / remove', () => {
  test('changes mode (and keeps what is not given)', () => {
    const id = create(0x5e000030, 1, { mode: 0o600 })
    sem.set(id, { mode: 0o604 })
    expect(sem.stat(id)).toMatchObject({ mode: 0o604, uid: 0, gid: 0 })
  })

  test.skipIf(!realRoot)('owner change; as the creator works, as a stranger → EPERM; a 0200 set can be set when all fields are given', () => {
    const id = create(0x5e000031, 1, { uid: 1000, gid: 1000, mode: 0o600 })
    sem.set(id, { uid: 1002, gid: 1003, mode: 0o640, asUid: 1000, asGid: 1000 })
    expect(sem.stat(id)).toMatchObject({ uid: 1002, gid: 1003, cuid: 1000, mode: 0o640 })
    // a stranger: IPC_STAT (for the fields not given) is refused first; with every field, IPC_SET is
    expect(caught(() => sem.set(id, { mode: 0o600, asUid: 2000, asGid: 2000 }))).toMatchObject({ code: 'EACCES', syscall: 'semctl' })
    expect(caught(() => sem.set(id, { uid: 2000, gid: 2000, mode: 0o600, asUid: 2000, asGid: 2000 }))).toMatchObject({ code: 'EPERM', syscall: 'semctl' })
    expect(sem.stat(id)).toMatchObject({ uid: 1002, mode: 0o640 })
    sem.set(id, { mode: 0o200, asUid: 1000, asGid: 1000 })
    // the creator cannot read it now, but may set every field
    expect(caught(() => sem.set(id, { mode: 0o600, asUid: 1000, asGid: 1000 }))).toMatchObject({ code: 'EACCES' })
    sem.set(id, { uid: 1000, gid: 1000, mode: 0o600, asUid: 1000, asGid: 1000 })
    expect(sem.stat(id)).toMatchObject({ uid: 1000, gid: 1000, mode: 0o600 })
    expect(process.geteuid!()).toBe(0)
  })

  test('remove: the key is free and the id gone; twice → EINVAL', () => {
    const id = create(0x5e000032)
    sem.remove(id)
    expect(caught(() => sem.get(0x5e000032))).toMatchObject({ code: 'ENOENT' })
    expect(caught(() => sem.remove(id))).toMatchObject({ code: 'EINVAL', syscall: 'semctl' })
  })
})
