/**
 * System V message queues, as a Node developer uses them: msg.get / stat /
 * list / send / receive / peek / peekAll / set / remove / limits. Nothing
 * blocks: a full queue and an empty one are answers.
 *
 * Keys of this file: 0x3500xxxx. Every queue a test makes is removed in
 * afterEach. We run in the private IPC namespace of test/run.mjs.
 */
import { afterEach, describe, expect, test } from 'vitest'
import { msg } from '../src/index'
import { have, run, runNode } from './helpers'

const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0

let ids: number[] = []
function create(key: number, options: msg.GetOptions = {}): number {
  const id = msg.get(key, { create: true, exclusive: true, ...options })
  ids.push(id)
  return id
}
afterEach(() => {
  for (const id of ids) {
    try {
      msg.remove(id)
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

describe('msg: arguments are checked before any system call', () => {
  test('bad keys, types, data, options', () => {
    expect(() => msg.get({} as any)).toThrow(TypeError)
    expect(() => msg.get(0x35000001, { nsems: 1 } as any)).toThrow(/unknown option "nsems"/)
    expect(() => msg.send(0, 0, 'x')).toThrow(RangeError)
    expect(() => msg.send(0, 1.5, 'x')).toThrow(TypeError)
    expect(() => msg.send(0, 1, 42 as any)).toThrow(TypeError)
    expect(() => msg.send(0, 1, Buffer.alloc(msg.limits().msgmax + 1))).toThrow(/MSGMAX/)
    expect(() => msg.receive(0, { type: 0, except: true })).toThrow(RangeError)
    expect(() => msg.receive(0, { wait: true } as any)).toThrow(/unknown option "wait"/)
    expect(() => msg.peek(0, -1)).toThrow(RangeError)
    expect(() => msg.set(0, { qbytes: -2 })).toThrow(RangeError)
    expect(msg.list().filter((q) => q.key >>> 16 === 0x3500)).toEqual([])
  })
})

describe('msg.get / stat / list / limits', () => {
  test('creates a queue: stat and ipcs agree; open by key; EEXIST; ENOENT', () => {
    const id = create(0x35000010, { mode: 0o620 })
    const st = msg.stat(id)
    const { msgmnb } = msg.limits()
    expect(st).toMatchObject({ id, key: 0x35000010, mode: 0o620, uid: 0, cuid: 0, cbytes: 0, qnum: 0, qbytes: msgmnb, stime: 0, rtime: 0 })
    expect(msg.get('0x35000010')).toBe(id)
    expect(caught(() => create(0x35000010))).toMatchObject({ code: 'EEXIST', syscall: 'msgget' })
    const e = caught(() => msg.get(0x3500001f))
    expect(e).toMatchObject({ code: 'ENOENT', syscall: 'msgget' })
    expect(e.message).toContain('msg key 0x3500001f')
    expect(msg.list().find((q) => q.id === id)).toEqual(st)
    expect(msg.scan().complete).toBe(true)
    if (have('ipcs')) expect(run('ipcs', ['-q']).stdout).toMatch(new RegExp(`0x35000010\\s+${id}\\s+\\S+\\s+620\\s+0\\s+0`))
  })

  test('limits are kernel.msgmax/msgmnb/msgmni and count our messages', () => {
    const read = (n: string) => Number(run('cat', [`/proc/sys/kernel/${n}`]).stdout)
    const before = msg.limits()
    expect(before).toMatchObject({ msgmax: read('msgmax'), msgmnb: read('msgmnb'), msgmni: read('msgmni') })
    const id = create(0x35000011)
    msg.send(id, 1, 'abc')
    expect(msg.limits()).toMatchObject({ queues: before.queues + 1, messages: before.messages + 1, bytes: before.bytes + 3 })
  })
})

describe('msg.send / receive / peek', () => {
  test('messages come out in order, by type, with MSG_EXCEPT and negative types', () => {
    const id = create(0x35000020)
    expect(msg.send(id, 3, 'three')).toBe(true)
    expect(msg.send(id, 1, Buffer.from([0, 1, 2]))).toBe(true)
    expect(msg.send(id, 2, new Uint8Array([9]))).toBe(true)
    expect(msg.send(id, 5, '')).toBe(true)
    expect(msg.stat(id)).toMatchObject({ qnum: 4, cbytes: 9, lspid: process.pid })
    expect(msg.receive(id, { type: 2 })).toEqual({ type: 2, data: Buffer.from([9]) })
    expect(msg.receive(id, { type: -2 })).toEqual({ type: 1, data: Buffer.from([0, 1, 2]) })
    expect(msg.receive(id, { type: 3, except: true })).toEqual({ type: 5, data: Buffer.alloc(0) })
    expect(msg.receive(id)).toEqual({ type: 3, data: Buffer.from('three') })
    expect(msg.receive(id)).toBeNull()
    expect(msg.stat(id).lrpid).toBe(process.pid)
  })

  test('a long message: E2BIG with a small maxSize, cut with truncate', () => {
    const id = create(0x35000021)
    msg.send(id, 1, Buffer.alloc(100, 7))
    expect(caught(() => msg.receive(id, { maxSize: 10 }))).toMatchObject({ code: 'E2BIG', syscall: 'msgrcv' })
    expect(msg.receive(id, { maxSize: 10, truncate: true })).toEqual({ type: 1, data: Buffer.alloc(10, 7) })
    expect(msg.stat(id).qnum).toBe(0)
  })

  test('a full queue: send answers false without waiting; nothing was added', () => {
    const id = create(0x35000022)
    const { msgmax } = msg.limits()
    const { qbytes } = msg.stat(id)
    let sent = 0
    while (msg.send(id, 1, Buffer.alloc(Math.min(msgmax, 4096)))) sent++
    expect(sent).toBe(Math.floor(qbytes / Math.min(msgmax, 4096)))
    expect(msg.stat(id).qnum).toBe(sent)
  })

  test('peek and peekAll read by position and leave every message in place', () => {
    const id = create(0x35000023)
    for (let i = 1; i <= 5; i++) msg.send(id, i * 10, `m${i}`)
    const before = msg.stat(id)
    expect(msg.peek(id)).toEqual({ type: 10, data: Buffer.from('m1') })
    expect(msg.peek(id, 4)).toEqual({ type: 50, data: Buffer.from('m5') })
    expect(msg.peek(id, 5)).toBeNull()
    const all = msg.peekAll(id)
    expect(all.consistent).toBe(true)
    expect(all.messages.map((m) => [m.type, m.data.toString()])).toEqual([[10, 'm1'], [20, 'm2'], [30, 'm3'], [40, 'm4'], [50, 'm5']])
    expect(all.before).toEqual(before)
    const after = msg.stat(id)
    expect(after).toMatchObject({ qnum: 5, rtime: before.rtime, lrpid: before.lrpid })
    expect(msg.receive(id)).toEqual({ type: 10, data: Buffer.from('m1') })
  })

  test('peekAll of an empty queue; of a queue another process fills', () => {
    const id = create(0x35000024, { mode: 0o666 })
    expect(msg.peekAll(id)).toMatchObject({ messages: [], consistent: true })
    const r = runNode(`for (let i = 0; i < 3; i++) lib.msg.send(${id}, 7, 'x' + i)`)
    expect(r.status).toBe(0)
    const all = msg.peekAll(id)
    expect(all.messages.map((m) => m.data.toString())).toEqual(['x0', 'x1', 'x2'])
    expect(all.after.lspid).toBe(r.pid)
  })

  test.skipIf(!realRoot)('a 0600 queue of uid 1000: its owner sends, peeks and receives; a stranger gets EACCES', () => {
    const id = create(0x35000025, { uid: 1000, gid: 1000, mode: 0o600 })
    const as = { uid: 1000, gid: 1000 }
    expect(msg.send(id, 1, 'mine', as)).toBe(true)
    expect(msg.peekAll(id, as).messages).toHaveLength(1)
    expect(caught(() => msg.send(id, 1, 'x', { uid: 2000, gid: 2000 }))).toMatchObject({ code: 'EACCES', syscall: 'msgsnd' })
    expect(caught(() => msg.peek(id, 0, { uid: 2000, gid: 2000 }))).toMatchObject({ code: 'EACCES' })
    expect(msg.receive(id, as)).toEqual({ type: 1, data: Buffer.from('mine') })
    expect(process.geteuid!()).toBe(0)
  })
})

describe('msg.set / remove', () => {
  test('mode and a smaller qbytes; a qbytes above msgmnb needs CAP_SYS_RESOURCE', () => {
    const id = create(0x35000030)
    msg.set(id, { mode: 0o640, qbytes: 1000 })
    expect(msg.stat(id)).toMatchObject({ mode: 0o640, qbytes: 1000 })
    const { msgmnb } = msg.limits()
    const capSysResource = (BigInt('0x' + /CapEff:\s*(\S+)/.exec(run('cat', ['/proc/self/status']).stdout)![1]) >> 24n) & 1n
    if (capSysResource) {
      msg.set(id, { qbytes: msgmnb + 1 })
      expect(msg.stat(id).qbytes).toBe(msgmnb + 1)
    } else {
      expect(caught(() => msg.set(id, { qbytes: msgmnb + 1 }))).toMatchObject({ code: 'EPERM', syscall: 'msgctl' })
      expect(msg.stat(id).qbytes).toBe(1000)
    }
  })

  test.skipIf(!realRoot)('as the creator works; as a stranger → EPERM', () => {
    const id = create(0x35000031, { uid: 1000, gid: 1000 })
    msg.set(id, { uid: 1001, mode: 0o644, asUid: 1000, asGid: 1000 })
    expect(msg.stat(id)).toMatchObject({ uid: 1001, gid: 1000, cuid: 1000, mode: 0o644 })
    expect(caught(() => msg.set(id, { uid: 2000, gid: 2000, mode: 0o600, qbytes: 100, asUid: 2000, asGid: 2000 }))).toMatchObject({ code: 'EPERM', syscall: 'msgctl' })
    expect(msg.stat(id)).toMatchObject({ uid: 1001, mode: 0o644 })
  })

  test('remove drops the queue and its messages', () => {
    const id = create(0x35000032)
    msg.send(id, 1, 'gone')
    msg.remove(id)
    expect(caught(() => msg.get(0x35000032))).toMatchObject({ code: 'ENOENT' })
    expect(caught(() => msg.stat(id))).toMatchObject({ code: 'EINVAL', syscall: 'msgctl' })
  })
})
