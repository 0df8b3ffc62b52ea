/**
 * System V shared memory, as a Node developer uses it: shm.get / attach /
 * detach / stat / list / set / remove / limits, plus the key helpers.
 *
 * Keys of this file: 0x5100xxxx, 0x0051xxxx (to see the 0x%08x padding) and
 * 0xd100xxxx (keys above 0x7fffffff). Every segment a test makes is removed
 * in afterEach; children that need a namespace of their own run under
 * `unshare --ipc` (we are already in the private namespace of test/run.mjs).
 */
import { execFileSync } from 'node:child_process'
import { constants as bufferConstants } from 'node:buffer'
import fs from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, test } from 'vitest'
import { DetachedError, formatKey, IPC_PRIVATE, KeyRanges, parseKey, shm } from '../src/index'
import { binDir, canUnshare, have, run, runNode, shmpeer, tempDir } from './helpers'

const GiB = 2 ** 30
/** Tests that switch to uid 1000/2000 need real root (not `unshare -U -r`, where only uid 0 is mapped). */
const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0

let ids: number[] = []
let buffers: Buffer[] = []

/** shm.get, remembering the id for afterEach. */
function get(key: number | string, options: shm.GetOptions = {}): number {
  const id = shm.get(key, options)
  if (!ids.includes(id)) ids.push(id)
  return id
}
function create(key: number | string, size = 4096, options: shm.GetOptions = {}): number {
  return get(key, { size, create: true, exclusive: true, ...options })
}
/** shm.attach, remembering the Buffer for afterEach. */
function attach(id: number, options: shm.AttachOptions = {}): Buffer {
  const b = shm.attach(id, options)
  buffers.push(b)
  return b
}

afterEach(() => {
  for (const b of buffers) shm.detach(b)
  for (const id of ids) {
    try {
      shm.remove(id)
    } catch {
      // already removed by the test
    }
  }
  ids = []
  buffers = []
})

/** What a thrown value looks like to the caller. */
function caught(fn: () => unknown): any {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

function peer(...args: string[]) {
  return run(shmpeer, args)
}

describe('keys: parseKey / formatKey / KeyRanges', () => {
  test('parseKey takes numbers and "0x…" or decimal strings', () => {
    expect(parseKey(0x162e)).toBe(0x162e)
    expect(parseKey('0x162e')).toBe(0x162e)
    expect(parseKey('0X162E')).toBe(0x162e)
    expect(parseKey(' 0x162e ')).toBe(0x162e)
    expect(parseKey('5678')).toBe(5678)
    expect(parseKey(0)).toBe(0)
    expect(parseKey('0xffffffff')).toBe(0xffffffff)
    expect(parseKey(0xffffffff)).toBe(0xffffffff)
  })

  test('negative keys (what C prints for key_t above 0x7fffffff) become unsigned', () => {
    expect(parseKey(-1)).toBe(0xffffffff)
    expect(parseKey('-1')).toBe(0xffffffff)
    expect(parseKey(-0x80000000)).toBe(0x80000000)
    expect(parseKey(0xd1000042 - 2 ** 32)).toBe(0xd1000042)
  })

  test('parseKey refuses what is not a 32-bit key', () => {
    expect(() => parseKey(2 ** 32)).toThrow(RangeError)
    expect(() => parseKey('0x100000000')).toThrow(RangeError)
    expect(() => parseKey(-0x80000001)).toThrow(RangeError)
    expect(() => parseKey('zzz')).toThrow(TypeError)
    expect(() => parseKey('')).toThrow(TypeError)
    expect(() => parseKey('0x')).toThrow(TypeError)
    expect(() => parseKey('12abc')).toThrow(TypeError)
    expect(() => parseKey(1.5)).toThrow(TypeError)
    expect(() => parseKey(NaN)).toThrow(TypeError)
    expect(() => parseKey(Infinity)).toThrow(TypeError)
    expect(() => parseKey(null as never)).toThrow(TypeError)
    expect(() => parseKey(undefined as never)).toThrow(TypeError)
    expect(() => parseKey({} as never)).toThrow(TypeError)
    expect(() => parseKey(10n as never)).toThrow(TypeError)
  })

  test('formatKey prints 0x%08x, like ipcs', () => {
    expect(formatKey(0x162e)).toBe('0x0000162e')
    expect(formatKey(0)).toBe('0x00000000')
    expect(formatKey(0xffffffff)).toBe('0xffffffff')
    expect(formatKey(-1)).toBe('0xffffffff')
    expect(formatKey(0x51000001)).toBe('0x51000001')
  })

  test('KeyRanges: keys and inclusive ranges, comma-separated', () => {
    const r = new KeyRanges('0x1000-0x1fff,0x162e')
    expect(r.ranges).toEqual([[0x1000, 0x1fff], [0x162e, 0x162e]])
    for (const k of [0x1000, 0x1800, 0x1fff, 0x162e]) expect(r.has(k)).toBe(true)
    for (const k of [0x0fff, 0x2000, 0, 0xffffffff]) expect(r.has(k)).toBe(false)
  })

  test('KeyRanges: several arguments, spaces, decimal and negative keys', () => {
    const r = new KeyRanges(['0x1, 0x5-0x6', ' 100-200 ', '-1'])
    expect(r.ranges).toEqual([[1, 1], [5, 6], [100, 200], [0xffffffff, 0xffffffff]])
    expect(r.has(6)).toBe(true)
    expect(r.has(7)).toBe(false)
    expect(r.has(150)).toBe(true)
    expect(r.has(0xffffffff)).toBe(true)
  })

  test('KeyRanges refuses empty lists, bad keys and backward ranges', () => {
    expect(() => new KeyRanges('')).toThrow(TypeError)
    expect(() => new KeyRanges(' , ')).toThrow(TypeError)
    expect(() => new KeyRanges([])).toThrow(TypeError)
    expect(() => new KeyRanges('zzz')).toThrow(TypeError)
    expect(() => new KeyRanges('0x10-')).toThrow(TypeError)
    expect(() => new KeyRanges('1-2-3')).toThrow(TypeError)
    expect(() => new KeyRanges('0x2000-0x1000')).toThrow(RangeError)
    expect(() => new KeyRanges('0x1-0x100000000')).toThrow(RangeError)
  })
})

describe('shm.get: create and open by key', () => {
  test('create, then open by number, "0x…" string and decimal string', () => {
    const id = create(0x51000001, 8192)
    expect(Number.isInteger(id)).toBe(true)
    expect(id).toBeGreaterThanOrEqual(0)
    expect(shm.get(0x51000001)).toBe(id)
    expect(shm.get('0x51000001')).toBe(id)
    expect(shm.get(String(0x51000001))).toBe(id)
    // Opening with a size up to the segment's works too.
    expect(shm.get(0x51000001, { size: 8192 })).toBe(id)
    const st = shm.stat(id)
    expect(st.key).toBe(0x51000001)
    expect(st.size).toBe(8192)
  })

  test('create without exclusive opens the segment that is there', () => {
    const id = create(0x51000002)
    expect(shm.get(0x51000002, { size: 4096, create: true })).toBe(id)
  })

  test('create exclusive on a taken key → EEXIST, with the key in the message', () => {
    create(0x51000003)
    const e = caught(() => shm.get(0x51000003, { size: 4096, create: true, exclusive: true }))
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('EEXIST')
    expect(e.errno).toBe(-17)
    expect(e.syscall).toBe('shmget')
    expect(e.message).toContain('0x51000003')
  })

  test('open a missing key → ENOENT (errno -2, syscall shmget, key as 0x%08x)', () => {
    const e = caught(() => shm.get(0x00510001))
    expect(e).toBeInstanceOf(Error)
    expect(e.code).toBe('ENOENT')
    expect(e.errno).toBe(-2)
    expect(e.syscall).toBe('shmget')
    expect(e.message).toContain('0x00510001')
    expect(e.message).toMatch(/^ENOENT/)
    // The string form of the key says the same.
    expect(caught(() => shm.get('0x510001')).message).toContain('0x00510001')
  })

  test('open with a size larger than the segment → EINVAL', () => {
    create(0x51000004, 4096)
    const e = caught(() => shm.get(0x51000004, { size: 8192 }))
    expect(e.code).toBe('EINVAL')
    expect(e.errno).toBe(-22)
    expect(e.syscall).toBe('shmget')
    expect(e.message).toContain('0x51000004')
  })

  test('creating needs a size', () => {
    expect(() => shm.get(0x51000005, { create: true })).toThrow(RangeError)
    expect(() => shm.get(IPC_PRIVATE)).toThrow(RangeError)
    expect(() => shm.get(0x51000005)).toThrow(expect.objectContaining({ code: 'ENOENT' }))
  })

  test('IPC_PRIVATE always creates a new, distinct segment with key 0', () => {
    const a = get(IPC_PRIVATE, { size: 4096 })
    const b = get(IPC_PRIVATE, { size: 4096 })
    const c = get('0x0', { size: 4096 })
    const d = get(0, { size: 4096, create: true, exclusive: true })
    expect(new Set([a, b, c, d]).size).toBe(4)
    for (const id of [a, b, c, d]) expect(shm.stat(id).key).toBe(0)
    // Writing one does not show in another.
    const ba = attach(a)
    const bb = attach(b)
    ba.write('only in a')
    expect(bb.subarray(0, 9).equals(Buffer.alloc(9))).toBe(true)
  })

  test('a negative key is the unsigned key above 0x7fffffff', () => {
    const id = create(0xd1000042 - 2 ** 32)
    expect(shm.stat(id).key).toBe(0xd1000042)
    expect(shm.get('0xd1000042')).toBe(id)
    expect(shm.get(0xd1000042)).toBe(id)
    expect(shm.list().find((s) => s.id === id)?.key).toBe(0xd1000042)
  })

  test.skipIf(!realRoot)('create as another uid/gid: the creator ids are theirs, ours stay ours', () => {
    const id = create(0x51000006, 4096, { uid: 1000, gid: 1001, mode: 0o640 })
    const st = shm.stat(id)
    expect([st.uid, st.gid, st.cuid, st.cgid]).toEqual([1000, 1001, 1000, 1001])
    expect(st.mode).toBe(0o640)
    expect(process.geteuid!()).toBe(0)
    expect(process.getegid!()).toBe(0)
  })
})

describe('shm.attach: a Buffer over the segment’s own memory', () => {
  test('read-write attach: the Buffer is zero-filled and as long as the segment', () => {
    const id = create(0x51000010, 3 * 4096)
    const b = attach(id)
    expect(Buffer.isBuffer(b)).toBe(true)
    expect(b.length).toBe(3 * 4096)
    expect(b.every((x) => x === 0)).toBe(true)
    expect(shm.isAttached(b)).toBe(true)
  })

  test('a second process reads what we wrote and writes what we then see', () => {
    const id = create(0x51000011, 4096)
    const b = attach(id)
    b.write('written by node', 100)
    const r = peer('read', String(id), '100', '15')
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout).toBe('written by node')
    // By key, too.
    expect(peer('read', 'key:0x51000011', '100', '15').stdout).toBe('written by node')

    const w = peer('write', String(id), '2000', 'written by C')
    expect(w.status, w.stderr).toBe(0)
    expect(b.toString('latin1', 2000, 2012)).toBe('written by C')
  })

  test('two attachments of one segment share the memory (no copy)', () => {
    const id = create(0x51000012, 4096)
    const a = attach(id)
    const c = attach(id)
    a[4095] = 0xab
    expect(c[4095]).toBe(0xab)
    c.write('xyz', 10)
    expect(a.toString('latin1', 10, 13)).toBe('xyz')
  })

  test('read-only attach shows the bytes, and another process may change them', () => {
    const id = create(0x51000013, 4096)
    attach(id).write('hello', 0)
    const ro = attach(id, { readonly: true })
    expect(ro.toString('latin1', 0, 5)).toBe('hello')
    expect(peer('write', String(id), '0', 'HELLO').status).toBe(0)
    expect(ro.toString('latin1', 0, 5)).toBe('HELLO')
  })

  test('documented: writing through a read-only attachment kills the process (SIGSEGV), as in C', () => {
    const r = runNode(
      `const id = lib.shm.get(0, { size: 4096 }); const b = lib.shm.attach(id, { readonly: true });
       lib.shm.remove(id); console.log('read', b[0]); b[0] = 1; console.log('still alive')`,
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.stdout).toContain('read 0')
    expect(r.stdout).not.toContain('still alive')
    expect(r.signal).toBe('SIGSEGV')
  })

  test('nattch goes up by exactly one per attach and down by one per detach', () => {
    const id = create(0x51000014, 4096)
    expect(shm.stat(id).nattch).toBe(0)
    const a = attach(id)
    expect(shm.stat(id).nattch).toBe(1)
    const b = attach(id, { readonly: true })
    expect(shm.stat(id).nattch).toBe(2)
    const c = attach(id, { offset: 100, length: 10 })
    expect(shm.stat(id).nattch).toBe(3)
    // stat, list and get do not attach.
    shm.stat(id)
    shm.list()
    shm.get(0x51000014)
    expect(shm.stat(id).nattch).toBe(3)
    shm.detach(b)
    expect(shm.stat(id).nattch).toBe(2)
    shm.detach(a)
    shm.detach(c)
    expect(shm.stat(id).nattch).toBe(0)
    // A failed attach leaves no attachment behind.
    expect(() => shm.attach(id, { offset: 4096, length: 1 })).toThrow(RangeError)
    expect(shm.stat(id).nattch).toBe(0)
  })

  test('another process attached counts too', () => {
    const id = create(0x51000015, 4096)
    attach(id)
    const r = peer('read', String(id), '0', '1')
    expect(r.status).toBe(0)
    const st = shm.stat(id)
    expect(st.nattch).toBe(1)
    expect(st.lpid).toBe(r.pid) // the last shmat/shmdt was the peer's
  })

  test('a window (offset, length) shows those bytes of the segment', () => {
    const size = 4 * 4096
    const id = create(0x51000016, size)
    const whole = attach(id)
    for (let i = 0; i < size; i++) whole[i] = i % 251
    const w = attach(id, { offset: 5000, length: 3000 })
    expect(w.length).toBe(3000)
    expect(w.equals(whole.subarray(5000, 8000))).toBe(true)
    w.write('through the window', 7)
    expect(whole.toString('latin1', 5007, 5025)).toBe('through the window')
    // Offset alone: to the end.
    const tail = attach(id, { offset: size - 10 })
    expect(tail.length).toBe(10)
    expect(tail.equals(whole.subarray(size - 10))).toBe(true)
    // Read-only window.
    const ro = attach(id, { offset: 1, length: 2, readonly: true })
    expect([...ro]).toEqual([1, 2])
    // An empty window at the very end is allowed.
    expect(attach(id, { offset: size, length: 0 }).length).toBe(0)
  })

  test('a window beyond the segment → RangeError, and nothing stays attached', () => {
    const id = create(0x51000017, 4096)
    expect(() => shm.attach(id, { offset: 4000, length: 200 })).toThrow(RangeError)
    expect(() => shm.attach(id, { offset: 4097 })).toThrow(RangeError)
    expect(() => shm.attach(id, { offset: 0, length: 4097 })).toThrow(RangeError)
    expect(() => shm.attach(id, { offset: 2 ** 52, length: 2 ** 20 })).toThrow(RangeError)
    expect(() => shm.attach(id, { length: bufferConstants.MAX_LENGTH + 1 })).toThrow(RangeError)
    expect(shm.stat(id).nattch).toBe(0)
  })

  test('a segment above 4 GiB: a 1 GiB window works and shows the right bytes', () => {
    const size = 5 * GiB // shmget allocates no pages; only what we touch is
    const id = create(0x51000018, size)
    const w = attach(id, { offset: 4 * GiB, length: GiB })
    expect(w.length).toBe(GiB)
    expect(shm.stat(id).nattch).toBe(1)
    w.write('past 4 GiB', GiB - 10)
    const r = peer('read', String(id), String(size - 10), '10')
    expect(r.stdout).toBe('past 4 GiB')
    expect(peer('write', String(id), String(4 * GiB + 3), 'abc').status).toBe(0)
    expect(w.toString('latin1', 3, 6)).toBe('abc')
    shm.detach(w)
    expect(shm.stat(id).nattch).toBe(0)
  })

  // Was a crash: when napi_create_external_buffer refused the 5 GiB Buffer,
  // Node had already run the finalizer and WrapRegion freed its hint a second
  // time (SIGSEGV). Kept in a child so a regression cannot take this file down.
  test('a segment above 4 GiB attached whole → RangeError, and the attachment is released', () => {
    const r = runNode(
      `const id = lib.shm.get(0x51000019, { size: 5 * 2 ** 30, create: true });
       let error;
       try { lib.shm.attach(id) } catch (e) { error = e.constructor.name + ': ' + e.message }
       const nattch = lib.shm.stat(id).nattch;
       lib.shm.remove(id);
       console.log(JSON.stringify({ error, nattch }))`,
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.signal, r.stderr).toBe(null)
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.error).toMatch(/^RangeError/)
    expect(r.json.nattch).toBe(0)
  })
})

describe('shm.detach', () => {
  test('neuters the Buffer: length 0, byteLength 0, reads give undefined, no crash', () => {
    const id = create(0x51000020, 4096)
    const b = shm.attach(id)
    b.write('data')
    const view = b.subarray(0, 4) // a view made before detach
    const u8 = new Uint8Array(b.buffer)
    shm.detach(b)
    expect(b.length).toBe(0)
    expect(b.byteLength).toBe(0)
    expect(b.buffer.byteLength).toBe(0)
    expect(b[0]).toBeUndefined()
    expect(b[4095]).toBeUndefined()
    expect(b.toString()).toBe('')
    expect(b.write('x')).toBe(0)
    expect(() => b.readUInt8(0)).toThrow(RangeError) // a JS error, not a fault
    expect(() => b.fill(1)).toThrow(TypeError) // "detached ArrayBuffer", again not a fault
    expect(view.length).toBe(0)
    expect(view[0]).toBeUndefined()
    expect(u8.length).toBe(0)
    expect(shm.isAttached(b)).toBe(false)
    expect(shm.stat(id).nattch).toBe(0)
    // The data is still in the segment.
    expect(peer('read', String(id), '0', '4').stdout).toBe('data')
  })

  test('detaching twice is harmless', () => {
    const id = create(0x51000021, 4096)
    const b = shm.attach(id)
    shm.detach(b)
    expect(() => shm.detach(b)).not.toThrow()
    expect(shm.stat(id).nattch).toBe(0)
  })

  test('detach of a Buffer that attach did not return → TypeError', () => {
    const id = create(0x51000022, 4096)
    const b = attach(id)
    expect(() => shm.detach(Buffer.alloc(16))).toThrow(TypeError)
    expect(() => shm.detach(Buffer.from(b))).toThrow(TypeError) // a copy
    expect(() => shm.detach(b.subarray(1))).toThrow(TypeError) // a view
    expect(() => shm.detach(new Uint8Array(4) as Buffer)).toThrow(TypeError)
    expect(() => shm.detach(undefined as never)).toThrow(TypeError)
    expect(() => shm.detach({} as never)).toThrow(TypeError)
    expect(shm.stat(id).nattch).toBe(1)
    expect(shm.isAttached(b)).toBe(true)
    expect(shm.isAttached(Buffer.alloc(1))).toBe(false)
  })

  test('a Buffer garbage-collected while attached detaches; one kept alive by a view does not', () => {
    const r = runNode(
      `const { shm } = lib;
       const id = shm.get(0, { size: 4096 });
       (() => { const b = shm.attach(id); b[0] = 1 })();
       let view;
       (() => { const b = shm.attach(id); view = b.subarray(0, 1) })();
       const out = { attached: shm.stat(id).nattch };
       let rounds = 0;
       function settle(want, then) {
         global.gc();
         setImmediate(() => {
           const n = shm.stat(id).nattch;
           if (n === want || ++rounds > 50) then(n); else settle(want, then);
         });
       }
       settle(1, (n) => {
         out.afterDroppingOne = n;
         out.viewLength = view.length;
         view = null;
         settle(0, (n2) => { out.afterDroppingAll = n2; shm.remove(id); console.log(JSON.stringify(out)) });
       });`,
      { nodeArgs: ['--expose-gc'], prefix: ['unshare', '--ipc'] },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toEqual({ attached: 2, afterDroppingOne: 1, viewLength: 1, afterDroppingAll: 0 })
  })
})

describe('the attached ArrayBuffer cannot move to another thread', () => {
  // Node ≥ 21 throws DataCloneError for an untransferable ArrayBuffer in a
  // transfer list; Node 20 copies it instead. Either way the segment must
  // stay attached and intact, and the other side never gets its memory.
  function expectCloneRefusedOrCopied(fn: () => unknown): unknown {
    try {
      return fn()
    } catch (e) {
      expect((e as Error).name).toBe('DataCloneError')
      return undefined
    }
  }

  test('structuredClone with transfer: throws or copies; the segment stays attached and intact', () => {
    const id = create(0x51000030, 4096)
    const b = attach(id)
    b.write('stay here')
    const clone = expectCloneRefusedOrCopied(() => structuredClone(b.buffer as ArrayBuffer, { transfer: [b.buffer as ArrayBuffer] })) as ArrayBuffer | undefined
    expect(b.length).toBe(4096)
    expect(b.buffer.byteLength).toBe(4096)
    expect(shm.isAttached(b)).toBe(true)
    expect(b.toString('latin1', 0, 9)).toBe('stay here')
    expect(shm.stat(id).nattch).toBe(1)
    if (clone) {
      new Uint8Array(clone)[0] = 0x21
      expect(b[0]).toBe('s'.charCodeAt(0)) // a copy, not the segment
    }
    // The Buffer still is the segment's memory.
    expect(peer('read', String(id), '0', '9').stdout).toBe('stay here')
    expectCloneRefusedOrCopied(() => structuredClone(b, { transfer: [b.buffer as ArrayBuffer] }))
    expect(b.length).toBe(4096)
  })

  test('postMessage to a worker with transfer: throws or copies; the worker cannot reach the segment', async () => {
    const id = create(0x51000031, 4096)
    const b = attach(id)
    b.write('segment bytes')
    const worker = new Worker(
      `const { parentPort } = require('node:worker_threads');
       parentPort.on('message', (m) => {
         const u = new Uint8Array(m.buffer, m.byteOffset, m.byteLength);
         const seen = Buffer.from(u.subarray(0, 13)).toString('latin1');
         u.fill(0x58);
         parentPort.postMessage({ seen, length: u.length });
       });`,
      { eval: true },
    )
    try {
      const reply = new Promise<{ seen: string; length: number }>((resolve, reject) => {
        worker.once('message', resolve)
        worker.once('error', reject)
      })
      let threw = false
      try {
        worker.postMessage(b, [b.buffer as ArrayBuffer])
      } catch (e) {
        threw = true
        expect((e as Error).name).toBe('DataCloneError')
      }
      if (!threw) {
        const m = await reply
        expect(m).toEqual({ seen: 'segment bytes', length: 4096 })
      }
      expect(b.length).toBe(4096)
      expect(shm.isAttached(b)).toBe(true)
      expect(b.toString('latin1', 0, 13)).toBe('segment bytes') // the worker's fill did not reach us
      expect(peer('read', String(id), '0', '13').stdout).toBe('segment bytes')
      expect(shm.stat(id).nattch).toBe(1)
    } finally {
      await worker.terminate()
    }
  })
})

describe('shm.stat', () => {
  test('reports key, id, size, mode, owner, creator, pids, nattch, times and flags', () => {
    const before = Math.floor(Date.now() / 1000)
    const id = create(0x51000040, 10000, { mode: 0o640 })
    let st = shm.stat(id)
    expect(st).toMatchObject({
      id,
      key: 0x51000040,
      size: 10000,
      mode: 0o640,
      uid: process.getuid!(),
      gid: process.getgid!(),
      cuid: process.getuid!(),
      cgid: process.getgid!(),
      cpid: process.pid,
      lpid: 0,
      nattch: 0,
      atime: 0,
      dtime: 0,
      dest: false,
      locked: false,
    })
    expect(Object.keys(st).sort()).toEqual(
      ['id', 'key', 'size', 'mode', 'uid', 'gid', 'cuid', 'cgid', 'cpid', 'lpid', 'nattch', 'atime', 'dtime', 'ctime', 'dest', 'locked'].sort(),
    )
    expect(st.ctime).toBeGreaterThanOrEqual(before)
    expect(st.ctime).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000))

    const b = attach(id)
    st = shm.stat(id)
    expect(st.nattch).toBe(1)
    expect(st.lpid).toBe(process.pid)
    expect(st.atime).toBeGreaterThanOrEqual(before)
    expect(st.dtime).toBe(0)
    shm.detach(b)
    st = shm.stat(id)
    expect(st.nattch).toBe(0)
    expect(st.dtime).toBeGreaterThanOrEqual(before)
  })

  test('mode is only the permission bits', () => {
    const id = create(0x51000041, 4096, { mode: 0o777 })
    expect(shm.stat(id).mode).toBe(0o777)
    const id2 = create(0x51000042, 4096, { mode: 0 })
    expect(shm.stat(id2).mode).toBe(0)
  })

  test('removed while attached: dest is set, the key is gone, the memory still works until detach', () => {
    const id = create(0x51000043, 4096)
    const b = attach(id)
    b.write('still here')
    shm.remove(id)
    const st = shm.stat(id)
    expect(st.dest).toBe(true)
    expect(st.nattch).toBe(1)
    expect(st.key).toBe(0) // the kernel makes it private
    expect(b.toString('latin1', 0, 10)).toBe('still here')
    expect(() => shm.get(0x51000043)).toThrow(expect.objectContaining({ code: 'ENOENT' }))
    // The key can be used again meanwhile.
    const id2 = create(0x51000043)
    expect(id2).not.toBe(id)
    shm.detach(b)
    const e = caught(() => shm.stat(id))
    expect(e.code).toBe('EINVAL')
    expect(e.errno).toBe(-22)
    expect(e.syscall).toBe('shmctl')
    expect(e.message).toContain(`id ${id}`)
  })

  test('locked: what the kernel reports after SHM_LOCK (done by a C helper), in stat and list', () => {
    const id = create(0x51000044, 4096)
    const lock = run(path.join(binDir, 'shmlock'), ['lock', String(id)])
    expect(lock.status, lock.stderr).toBe(0)
    expect(shm.stat(id).locked).toBe(true)
    expect(shm.stat(id).mode).toBe(0o600) // the flag is not mixed into mode
    expect(shm.list().find((s) => s.id === id)?.locked).toBe(true)
    expect(run(path.join(binDir, 'shmlock'), ['unlock', String(id)]).status).toBe(0)
    expect(shm.stat(id).locked).toBe(false)
  })

  test('stat of an id that does not exist → EINVAL with the id in the message', () => {
    const e = caught(() => shm.stat(0x7ffffff0))
    expect(e.code).toBe('EINVAL')
    expect(e.syscall).toBe('shmctl')
    expect(e.message).toContain(`id ${0x7ffffff0}`)
  })
})

describe('shm.list / shm.scan', () => {
  test('lists every segment of the namespace with the same fields as stat', () => {
    const a = create(0x51000050, 4096)
    const b = create(0x51000051, 8192, { mode: 0o644 })
    attach(b)
    const mine = shm.list().filter((s) => s.id === a || s.id === b)
    expect(mine).toHaveLength(2)
    for (const s of mine) {
      const st = shm.stat(s.id)
      expect({ ...s, atime: 0, dtime: 0, ctime: 0 }).toEqual({ ...st, atime: 0, dtime: 0, ctime: 0 })
    }
    expect(shm.scan().complete).toBe(true) // Linux ≥ 4.17 has SHM_STAT_ANY
  })

  test.skipIf(!realRoot)('includes a mode 000 segment created by another uid', () => {
    const id = create(0x51000052, 4096, { uid: 1000, gid: 1000, mode: 0 })
    const s = shm.list().find((x) => x.id === id)
    expect(s).toMatchObject({ key: 0x51000052, mode: 0, uid: 1000, gid: 1000, cuid: 1000, cgid: 1000, size: 4096 })
  })

  test('a removed segment is no longer listed; one removed while attached is, with dest', () => {
    const a = create(0x51000053)
    const b = create(0x51000054)
    const buf = attach(b)
    shm.remove(a)
    shm.remove(b)
    const list = shm.list()
    expect(list.find((s) => s.id === a)).toBeUndefined()
    expect(list.find((s) => s.id === b)).toMatchObject({ dest: true, nattch: 1 })
    shm.detach(buf)
    expect(shm.list().find((s) => s.id === b)).toBeUndefined()
  })
})

describe('shm.set', () => {
  test.skipIf(!realRoot)('changes owner uid, gid and mode; stat and ipcs agree', () => {
    const id = create(0x51000060, 4096)
    shm.set(id, { uid: 1000, gid: 1001, mode: 0o640 })
    const st = shm.stat(id)
    expect(st).toMatchObject({ uid: 1000, gid: 1001, mode: 0o640, cuid: 0, cgid: 0 })
    if (have('ipcs')) {
      const out = execFileSync('ipcs', ['-m', '-i', String(id)], { encoding: 'utf8' })
      expect(out).toMatch(/uid=1000\s+gid=1001\s+cuid=0\s+cgid=0/)
      expect(out).toMatch(/mode=0?640/)
    }
  })

  test('changes only what is given', () => {
    const id = create(0x51000061, 4096, { mode: 0o600 })
    const before = shm.stat(id)
    shm.set(id, { mode: 0o604 })
    expect(shm.stat(id)).toMatchObject({ mode: 0o604, uid: before.uid, gid: before.gid })
    shm.set(id, {})
    expect(shm.stat(id).mode).toBe(0o604)
  })

  test.skipIf(!realRoot)('as the creator (asUid) works; as a stranger → EPERM, and we are still root after', () => {
    const id = create(0x51000062, 4096, { uid: 1000, gid: 1000 })
    shm.set(id, { mode: 0o644, asUid: 1000, asGid: 1000 })
    expect(shm.stat(id).mode).toBe(0o644)
    const e = caught(() => shm.set(id, { mode: 0o600, asUid: 2000, asGid: 2000 }))
    expect(e.code).toBe('EPERM')
    expect(e.errno).toBe(-1)
    expect(e.syscall).toBe('shmctl')
    expect(e.message).toContain(`id ${id}`)
    expect(shm.stat(id).mode).toBe(0o644)
    expect(process.geteuid!()).toBe(0)
    shm.set(id, { mode: 0o600 }) // as root again
    expect(shm.stat(id).mode).toBe(0o600)
  })

  test('set of an id that does not exist → EINVAL', () => {
    expect(() => shm.set(0x7ffffff0, { mode: 0o600 })).toThrow(expect.objectContaining({ code: 'EINVAL', syscall: 'shmctl' }))
  })
})

describe('attach as another identity', () => {
  test.skipIf(!realRoot)('the owner can attach a 0600 segment; a stranger gets EACCES', () => {
    const id = create(0x51000070, 4096, { uid: 1000, gid: 1000, mode: 0o600 })
    const b = attach(id, { uid: 1000, gid: 1000 })
    expect(b.length).toBe(4096)
    const e = caught(() => shm.attach(id, { uid: 2000, gid: 2000 }))
    expect(e.code).toBe('EACCES')
    expect(e.errno).toBe(-13)
    expect(e.syscall).toBe('shmat')
    expect(e.message).toContain(`id ${id}`)
    expect(shm.stat(id).nattch).toBe(1)
    expect(process.geteuid!()).toBe(0)
  })

  test.skipIf(!realRoot)('a 0400 segment: the owner may attach read-only but not read-write', () => {
    const id = create(0x51000071, 4096, { uid: 1000, gid: 1000, mode: 0o400 })
    expect(() => shm.attach(id, { uid: 1000, gid: 1000 })).toThrow(expect.objectContaining({ code: 'EACCES' }))
    expect(attach(id, { uid: 1000, gid: 1000, readonly: true }).length).toBe(4096)
  })
})

describe('shm.remove', () => {
  test('removes the segment: the key is free, the id is gone', () => {
    const id = create(0x51000080)
    shm.remove(id)
    expect(() => shm.get(0x51000080)).toThrow(expect.objectContaining({ code: 'ENOENT' }))
    expect(shm.list().find((s) => s.id === id)).toBeUndefined()
    const e = caught(() => shm.remove(id))
    expect(e.code).toBe('EINVAL')
    expect(e.syscall).toBe('shmctl')
    expect(e.message).toContain(`id ${id}`)
  })

  test.skipIf(!realRoot)('as the creator (asUid) works; as a stranger → EPERM', () => {
    const id = create(0x51000081, 4096, { uid: 1000, gid: 1000 })
    expect(() => shm.remove(id, { asUid: 2000, asGid: 2000 })).toThrow(expect.objectContaining({ code: 'EPERM', errno: -1 }))
    expect(shm.stat(id).key).toBe(0x51000081)
    shm.remove(id, { asUid: 1000, asGid: 1000 })
    expect(() => shm.stat(id)).toThrow(expect.objectContaining({ code: 'EINVAL' }))
  })
})

describe('shm.limits', () => {
  const proc = (name: string) => fs.readFileSync(`/proc/sys/kernel/${name}`, 'utf8').trim()
  const clamp = (s: string) => (BigInt(s) > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(s))

  test('numbers that match the namespace’s /proc/sys/kernel values', () => {
    const l = shm.limits()
    for (const [k, v] of Object.entries(l)) {
      expect(typeof v, k).toBe('number')
      expect(Number.isSafeInteger(v), k).toBe(true)
    }
    expect(l.shmmni).toBe(Number(proc('shmmni')))
    expect(l.shmmax).toBe(clamp(proc('shmmax')))
    expect(l.shmall).toBe(clamp(proc('shmall')))
    expect(l.shmmin).toBe(1)
    expect(l.pageSize).toBe(Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' })))
    expect(shm.pageSize).toBe(l.pageSize)
  })

  test('usage counts our segments', () => {
    create(0x51000090, 3 * 4096)
    create(0x51000091, 4096)
    const l = shm.limits()
    expect(l.segments).toBeGreaterThanOrEqual(2)
    expect(l.totalPages).toBeGreaterThanOrEqual(4)
  })

  test.skipIf(!canUnshare('--ipc'))('a size above SHMMAX → RangeError before shmget (namespace of its own with a small shmmax)', () => {
    const { dir, cleanup } = tempDir()
    try {
      const trace = path.join(dir, 'trace')
      const straced = have('strace')
      const prefix = ['unshare', '--ipc', ...(straced ? ['strace', '-f', '-qq', '-e', 'trace=shmget', '-o', trace] : [])]
      const r = runNode(
        `require('node:fs').writeFileSync('/proc/sys/kernel/shmmax', '1048576');
         const out = { shmmax: lib.shm.limits().shmmax };
         try { lib.shm.get(0x51000092, { size: 1048577, create: true }) } catch (e) { out.error = e.constructor.name + ': ' + e.message }
         out.segments = lib.shm.list().length;
         const id = lib.shm.get(0x51000092, { size: 1048576, create: true });
         out.size = lib.shm.stat(id).size;
         lib.shm.remove(id);
         console.log(JSON.stringify(out))`,
        { prefix },
      )
      expect(r.status, r.stderr).toBe(0)
      expect(r.json.shmmax).toBe(1048576)
      expect(r.json.error).toMatch(/^RangeError: .*1048577.*SHMMAX.*1048576/)
      expect(r.json.segments).toBe(0)
      expect(r.json.size).toBe(1048576)
      if (straced) {
        const calls = fs.readFileSync(trace, 'utf8').split('\n').filter((l) => l.includes('shmget('))
        expect(calls).toHaveLength(1)
        expect(calls[0]).toContain('1048576')
      }
      // The test namespace's own limit is untouched.
      expect(shm.limits().shmmax).toBe(clamp(proc('shmmax')))
    } finally {
      cleanup()
    }
  })
})

describe('limits the kernel enforces come back as errors with a code', () => {
  test.skipIf(!canUnshare('--ipc'))('over SHMALL → ENOSPC from shmget (namespace of its own with shmall = 2 pages)', () => {
    const r = runNode(
      `require('node:fs').writeFileSync('/proc/sys/kernel/shmall', '2');
       const { shm } = lib; const out = { shmall: shm.limits().shmall };
       const a = shm.get(0x51000093, { size: 2 * 4096, create: true });
       try { shm.get(0x51000094, { size: 4096, create: true }) } catch (e) { out.error = { code: e.code, errno: e.errno, syscall: e.syscall, message: e.message } }
       shm.remove(a);
       console.log(JSON.stringify(out))`,
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.shmall).toBe(2)
    expect(r.json.error).toMatchObject({ code: 'ENOSPC', errno: -28, syscall: 'shmget' })
    expect(r.json.error.message).toContain('0x51000094')
  })
})

describe('bad arguments → TypeError / RangeError', () => {
  const key = 0x510000a0

  test('shm.get', () => {
    expect(() => shm.get(key, { size: -1, create: true })).toThrow(RangeError)
    expect(() => shm.get(key, { size: 1.5, create: true })).toThrow(TypeError)
    expect(() => shm.get(key, { size: NaN, create: true })).toThrow(TypeError)
    expect(() => shm.get(key, { size: '4096' as never, create: true })).toThrow(TypeError)
    expect(() => shm.get(key, { size: 2 ** 53, create: true })).toThrow(RangeError)
    expect(() => shm.get(2 ** 32, { size: 4096, create: true })).toThrow(RangeError)
    expect(() => shm.get('zzz', { size: 4096, create: true })).toThrow(TypeError)
    expect(() => shm.get(key, { size: 4096, create: true, sise: 1 } as never)).toThrow(TypeError)
    expect(() => shm.get(key, { size: 4096, create: true, mode: 0o1000 })).toThrow(RangeError)
    expect(() => shm.get(key, { size: 4096, create: true, mode: -1 })).toThrow(RangeError)
    expect(() => shm.get(key, { size: 4096, create: 'yes' as never })).toThrow(TypeError)
    expect(() => shm.get(key, { size: 4096, create: true, exclusive: 1 as never })).toThrow(TypeError)
    expect(() => shm.get(key, { size: 4096, create: true, hugetlb: 3 })).toThrow(RangeError)
    expect(() => shm.get(key, { size: 4096, create: true, uid: -2 })).toThrow(RangeError)
    expect(() => shm.get(key, { size: 4096, create: true, gid: 2 ** 32 })).toThrow(RangeError)
    expect(() => shm.get(key, null as never)).toThrow(TypeError)
    expect(() => shm.get(key, 'create' as never)).toThrow(TypeError)
    expect(() => shm.get(key)).toThrow(expect.objectContaining({ code: 'ENOENT' })) // nothing was created
  })

  test('key -1 is accepted as 0xffffffff', () => {
    // Only parsed here: 0xffffffff is no file's key, so it is not created in the shared namespace.
    expect(() => shm.get(-1)).toThrow(expect.objectContaining({ code: 'ENOENT', message: expect.stringContaining('0xffffffff') }))
  })

  test('shm.attach / stat / set / remove', () => {
    const id = create(0x510000a1)
    for (const bad of [-1, 2 ** 31, 2 ** 53]) {
      expect(() => shm.attach(bad)).toThrow(RangeError)
      expect(() => shm.stat(bad)).toThrow(RangeError)
      expect(() => shm.remove(bad)).toThrow(RangeError)
      expect(() => shm.set(bad, { mode: 0o600 })).toThrow(RangeError)
    }
    for (const bad of [1.5, NaN, '1', null, undefined]) {
      expect(() => shm.attach(bad as never)).toThrow(TypeError)
      expect(() => shm.stat(bad as never)).toThrow(TypeError)
      expect(() => shm.remove(bad as never)).toThrow(TypeError)
    }
    expect(() => shm.attach(id, { readonly: 'yes' as never })).toThrow(TypeError)
    expect(() => shm.attach(id, { offset: -1 })).toThrow(RangeError)
    expect(() => shm.attach(id, { offset: 0.5 })).toThrow(TypeError)
    expect(() => shm.attach(id, { length: -1 })).toThrow(RangeError)
    expect(() => shm.attach(id, { windowSize: 1 } as never)).toThrow(TypeError)
    expect(() => shm.attach(id, { uid: -5 })).toThrow(RangeError)
    expect(() => shm.set(id, { mode: 0o1000 })).toThrow(RangeError)
    expect(() => shm.set(id, { owner: 0 } as never)).toThrow(TypeError)
    expect(() => shm.set(id, { uid: 1.5 })).toThrow(TypeError)
    expect(() => shm.remove(id, { force: true } as never)).toThrow(TypeError)
    expect(shm.stat(id)).toMatchObject({ mode: 0o600, nattch: 0, dest: false })
  })

  test.skipIf(!have('strace') || !canUnshare('--ipc'))('argument errors come before any shmget/shmat/shmdt or a change by shmctl', () => {
    const { dir, cleanup } = tempDir()
    try {
      const trace = path.join(dir, 'trace')
      const r = runNode(
        `const { shm } = lib; const k = 0x510000a2; const bad = [];
         const calls = [
           () => shm.get(k, { size: -1, create: true }), () => shm.get(k, { size: 1.5, create: true }),
           () => shm.get(2 ** 32, { size: 1, create: true }), () => shm.get('zzz', { size: 1, create: true }),
           () => shm.get(k, { size: 1, create: true, bogus: 1 }), () => shm.get(k, { size: 1, create: true, mode: 0o1000 }),
           () => shm.attach(-1), () => shm.attach(0, { offset: -1 }), () => shm.attach(0, { length: 2 ** 40 }),
           () => shm.stat(-1), () => shm.set(-1, {}), () => shm.set(0, { mode: 0o1000 }), () => shm.remove(-1),
           () => shm.detach(Buffer.alloc(1)),
         ];
         for (const c of calls) { try { c(); bad.push('no throw: ' + c) } catch (e) { if (!(e instanceof TypeError || e instanceof RangeError)) bad.push(String(e)) } }
         console.log(JSON.stringify({ bad }))`,
        { prefix: ['unshare', '--ipc', 'strace', '-f', '-qq', '-e', 'trace=shmget,shmat,shmdt,shmctl', '-o', trace] },
      )
      expect(r.status, r.stderr).toBe(0)
      expect(r.json.bad).toEqual([])
      const lines = fs.readFileSync(trace, 'utf8').split('\n').filter(Boolean)
      // limits() (IPC_INFO + SHM_INFO) reads the namespace's SHMMAX; nothing else may happen.
      const changes = lines.filter((l) => !/shmctl\(0, (IPC_INFO|SHM_INFO),/.test(l))
      expect(changes).toEqual([])
    } finally {
      cleanup()
    }
  })

  // The issue: "…throw TypeError / RangeError before any system call".
  test.skipIf(!have('strace') || !canUnshare('--ipc'))('a bad mode is refused with no system call at all', () => {
    const { dir, cleanup } = tempDir()
    try {
      const trace = path.join(dir, 'trace')
      const r = runNode(
        `try { lib.shm.get(0x510000a3, { size: 4096, create: true, mode: 0o1000 }) } catch (e) { console.log(JSON.stringify(e instanceof RangeError && e.name)) }`,
        { prefix: ['unshare', '--ipc', 'strace', '-f', '-qq', '-e', 'trace=shmget,shmat,shmdt,shmctl', '-o', trace] },
      )
      expect(r.json).toBe('RangeError')
      expect(fs.readFileSync(trace, 'utf8').trim()).toBe('')
    } finally {
      cleanup()
    }
  })

  test('no argument crashes the process (a child calls everything with odd values)', () => {
    const r = runNode(
      `const { shm } = lib;
       const odd = [undefined, null, -1, 0, 1.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 32, 2 ** 53, -(2 ** 53), '', '0x', 'zzz', '-1', {}, [], () => 1, Symbol('s'), 10n, true, Buffer.alloc(1)];
       const id = shm.get(0, { size: 4096 });
       const unexpected = []; let calls = 0;
       function tryIt(name, fn) {
         calls++;
         try { const r = fn(); if (Buffer.isBuffer(r) && shm.isAttached(r)) shm.detach(r); else if (typeof r === 'number' && name.startsWith('get') && r !== id) shm.remove(r) }
         catch (e) { if (!(e instanceof TypeError || e instanceof RangeError || (e && typeof e.code === 'string' && e.code.startsWith('E')))) unexpected.push(name + ': ' + String(e)) }
       }
       for (const v of odd) {
         tryIt('get key', () => shm.get(v));
         tryIt('get size', () => shm.get(0, { size: v }));
         tryIt('get mode', () => shm.get(0, { size: 4096, mode: v }));
         tryIt('get hugetlb', () => shm.get(0, { size: 4096, hugetlb: v }));
         tryIt('get options', () => shm.get(0, v));
         tryIt('attach id', () => shm.attach(v));
         tryIt('attach offset', () => shm.attach(id, { offset: v }));
         tryIt('attach length', () => shm.attach(id, { length: v }));
         tryIt('attach offset+length', () => shm.attach(id, { offset: v, length: 1 }));
         tryIt('attach options', () => shm.attach(id, v));
         tryIt('detach', () => shm.detach(v));
         tryIt('stat', () => shm.stat(v));
         tryIt('set mode', () => shm.set(id, { mode: v }));
         tryIt('set uid', () => shm.set(id, { uid: v }));
         tryIt('set options', () => shm.set(id, v));
         tryIt('remove', () => shm.remove(v));
       }
       try { shm.remove(id) } catch {}
       console.log(JSON.stringify({ calls, unexpected, nattch: shm.list().reduce((n, s) => n + s.nattch, 0) }))`,
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.signal, r.stderr).toBe(null)
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.unexpected).toEqual([])
    expect(r.json.calls).toBeGreaterThan(300)
  })
})

describe('shm.checksum: an async copy over an attachment', () => {
  test('gives the CRC-32C of the bytes; detach meanwhile throws EBUSY; afterwards it works', async () => {
    const id = shm.get(0x510000f0, { size: 64 << 20, create: true })
    try {
      const b = shm.attach(id)
      b.fill(0x61)
      const pending = shm.checksum(b)
      let busy: unknown
      try {
        shm.detach(b)
      } catch (e) {
        busy = e
      }
      expect((busy as { code?: string }).code).toBe('EBUSY')
      expect(b.length).toBe(64 << 20) // still attached, still usable
      const crc = await pending
      expect(crc).toBe(await shm.checksum(b))
      const small = shm.attach(id, { length: 9 })
      small.write('123456789')
      expect(await shm.checksum(small)).toBe(0xe3069283) // the CRC-32C check value
      shm.detach(small)
      shm.detach(b)
      expect(b.length).toBe(0)
      await expect(shm.checksum(b)).rejects.toBeInstanceOf(DetachedError)
      await expect(shm.checksum(b)).rejects.toThrow(`shm.checksum: the Buffer is already detached (id ${id})`)
      await expect(shm.checksum(Buffer.alloc(4))).rejects.toBeInstanceOf(TypeError)
    } finally {
      shm.remove(id)
    }
  })
})
