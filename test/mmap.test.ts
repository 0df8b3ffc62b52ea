/**
 * File mapping, as a Node developer uses it: mmap.map / sync / advise / unmap.
 * Every file lives under a fresh temp folder removed in afterEach.
 */
import { constants as bufferConstants } from 'node:buffer'
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { DetachedError, mmap } from '../src/index'
import { canUnshare, runNode, tempDir } from './helpers'

const GiB = 2 ** 30
const page = 4096

let dir: string
let cleanup: () => void
let maps: Buffer[] = []

beforeEach(() => {
  ;({ dir, cleanup } = tempDir())
})
afterEach(() => {
  for (const b of maps) mmap.unmap(b)
  maps = []
  cleanup()
})

function map(file: string, options: mmap.MapOptions = {}): Buffer {
  const b = mmap.map(file, options)
  maps.push(b)
  return b
}
function file(name: string, content?: Buffer | string): string {
  const p = path.join(dir, name)
  if (content !== undefined) fs.writeFileSync(p, content)
  return p
}
/** 0, 1, 2, … 250, 0, 1, … : every offset shows a byte that says where it is. */
function pattern(n: number): Buffer {
  const b = Buffer.alloc(n)
  for (let i = 0; i < n; i++) b[i] = i % 251
  return b
}
function caught(fn: () => unknown): any {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

describe('mmap.map with create', () => {
  test('creates the file, extends it to offset + length, allocated (fallocate, not a sparse hole)', () => {
    const f = file('new.bin')
    const b = map(f, { length: 10000, write: true, create: true })
    expect(b.length).toBe(10000)
    expect(b.every((x) => x === 0)).toBe(true)
    const st = fs.statSync(f)
    expect(st.size).toBe(10000)
    expect(st.blocks * 512).toBeGreaterThanOrEqual(10000) // really allocated: a full disk would fail now
    expect(st.mode & 0o777).toBe(0o600)
  })

  test('extends an existing smaller file and keeps its bytes', () => {
    const f = file('grow.bin', 'x'.repeat(100))
    const b = map(f, { length: 2 * page, write: true, create: true })
    expect(fs.statSync(f).size).toBe(2 * page)
    expect(b.toString('latin1', 0, 100)).toBe('x'.repeat(100))
    expect(b[100]).toBe(0)
  })

  test('with an offset, the file grows to offset + length', () => {
    const f = file('off.bin')
    const b = map(f, { offset: 5000, length: 100, write: true, create: true })
    expect(b.length).toBe(100)
    expect(fs.statSync(f).size).toBe(5100)
    b.write('at 5000')
    mmap.sync(b)
    expect(fs.readFileSync(f).toString('latin1', 5000, 5007)).toBe('at 5000')
  })

  test('never shrinks a larger file', () => {
    const f = file('big.bin', pattern(3 * page))
    const b = map(f, { length: 100, write: true, create: true })
    expect(b.length).toBe(100)
    expect(fs.statSync(f).size).toBe(3 * page)
    expect(b.equals(pattern(100))).toBe(true)
  })

  test('mode of a created file', () => {
    const f = file('mode.bin')
    map(f, { length: 1, write: true, create: true, mode: 0o640 })
    expect(fs.statSync(f).mode & 0o777).toBe(0o640)
  })
})

describe('reading and writing through a map', () => {
  test('write through the map, sync, the file has the bytes', () => {
    const f = file('w.bin', Buffer.alloc(3 * page))
    const b = map(f, { write: true })
    expect(b.length).toBe(3 * page)
    b.write('hello mmap', 5000)
    b[3 * page - 1] = 0x7f
    mmap.sync(b)
    const back = fs.readFileSync(f)
    expect(back.toString('latin1', 5000, 5010)).toBe('hello mmap')
    expect(back[3 * page - 1]).toBe(0x7f)
    b.write('async', 0)
    mmap.sync(b, { async: true })
    expect(fs.readFileSync(f).toString('latin1', 0, 5)).toBe('async')
  })

  test('MAP_SHARED: another map and plain file writes see the same bytes', () => {
    const f = file('s.bin', Buffer.alloc(page))
    const a = map(f, { write: true })
    const b = map(f)
    a.write('shared')
    expect(b.toString('latin1', 0, 6)).toBe('shared')
    const fd = fs.openSync(f, 'r+')
    fs.writeSync(fd, 'pwrite', 100, 'latin1')
    fs.closeSync(fd)
    expect(a.toString('latin1', 100, 106)).toBe('pwrite')
  })

  test('read-only map of an existing file (the default)', () => {
    const content = pattern(10000)
    const f = file('r.bin', content)
    const b = map(f)
    expect(b.length).toBe(10000)
    expect(b.equals(content)).toBe(true)
    const part = map(f, { length: 10 })
    expect(part.equals(content.subarray(0, 10))).toBe(true)
  })

  test('documented: writing through a read-only map kills the process (SIGSEGV), as in C', () => {
    const f = file('ro.bin', 'abc')
    const r = runNode(`const b = lib.mmap.map(process.argv[1]); console.log('read', b[0]); b[0] = 1; console.log('still alive')`, { args: [f] })
    expect(r.stdout).toContain('read 97')
    expect(r.stdout).not.toContain('still alive')
    expect(r.signal).toBe('SIGSEGV')
    expect(fs.readFileSync(f, 'latin1')).toBe('abc')
  })

  test('an offset that is not page-aligned shows the right bytes', () => {
    const content = pattern(4 * page)
    const f = file('u.bin', content)
    for (const offset of [1, 7, page - 1, page + 3, 2 * page + 1001]) {
      const b = map(f, { offset, length: 50 })
      expect(b.length).toBe(50)
      expect(b.equals(content.subarray(offset, offset + 50)), `offset ${offset}`).toBe(true)
    }
    // Without length: to the end of the file.
    const tail = map(f, { offset: page + 3 })
    expect(tail.length).toBe(3 * page - 3)
    expect(tail.equals(content.subarray(page + 3))).toBe(true)
    // Writes at an unaligned offset land where they should.
    const w = map(f, { offset: page + 3, length: 5, write: true })
    w.write('HELLO')
    mmap.sync(w)
    expect(fs.readFileSync(f).toString('latin1', page + 3, page + 8)).toBe('HELLO')
    expect(fs.readFileSync(f)[page + 2]).toBe(content[page + 2])
    expect(fs.readFileSync(f)[page + 8]).toBe(content[page + 8])
  })

  test('a window past 4 GiB of a large (sparse) file', () => {
    const f = file('sparse.bin')
    fs.writeFileSync(f, '')
    fs.truncateSync(f, 5 * GiB)
    const fd = fs.openSync(f, 'r+')
    fs.writeSync(fd, 'far away', 4 * GiB + 1, 'latin1')
    fs.closeSync(fd)
    const b = map(f, { offset: 4 * GiB + 1, length: 100 })
    expect(b.toString('latin1', 0, 8)).toBe('far away')
    const w = map(f, { offset: 4 * GiB + 1, length: GiB - 1 })
    expect(w.length).toBe(GiB - 1)
    expect(w.toString('latin1', 0, 8)).toBe('far away')
  })
})

describe('errors of mmap.map', () => {
  test('beyond the end of the file without create → RangeError, the file is unchanged', () => {
    const f = file('short.bin', pattern(100))
    expect(() => mmap.map(f, { length: 101 })).toThrow(RangeError)
    expect(() => mmap.map(f, { length: 101, write: true })).toThrow(RangeError)
    expect(() => mmap.map(f, { offset: 50, length: 51 })).toThrow(RangeError)
    expect(() => mmap.map(f, { offset: 100 })).toThrow(RangeError)
    expect(() => mmap.map(f, { offset: 1000 })).toThrow(RangeError)
    expect(fs.statSync(f).size).toBe(100)
  })

  test('an empty file has nothing to map → RangeError', () => {
    const f = file('empty.bin', '')
    expect(() => mmap.map(f)).toThrow(RangeError)
  })

  test('a missing file → ENOENT (errno -2, syscall open, the path in the message), not created', () => {
    const f = path.join(dir, 'missing.bin')
    for (const options of [{}, { write: true }]) {
      const e = caught(() => mmap.map(f, options))
      expect(e.code).toBe('ENOENT')
      expect(e.errno).toBe(-2)
      expect(e.syscall).toBe('open')
      expect(e.message).toContain(f)
    }
    expect(fs.existsSync(f)).toBe(false)
    expect(caught(() => mmap.map(path.join(dir, 'no', 'such', 'dir'), { length: 1, write: true, create: true })).code).toBe('ENOENT')
  })

  test('a directory → EISDIR', () => {
    const e = caught(() => mmap.map(dir))
    expect(e.code).toBe('EISDIR')
    expect(e.errno).toBe(-21)
    expect(e.message).toContain(dir)
    expect(caught(() => mmap.map(dir, { write: true })).code).toBe('EISDIR')
  })

  test('something that is not a regular file → an error with a code, not a crash', () => {
    const e = caught(() => mmap.map('/dev/null'))
    expect(typeof e.code).toBe('string')
    expect(e.message).toContain('/dev/null')
  })

  test('bad arguments → TypeError / RangeError', () => {
    const f = file('args.bin', pattern(100))
    expect(() => mmap.map('')).toThrow(TypeError)
    expect(() => mmap.map(42 as never)).toThrow(TypeError)
    expect(() => mmap.map(undefined as never)).toThrow(TypeError)
    expect(() => mmap.map(f, { length: 0 })).toThrow(RangeError)
    expect(() => mmap.map(f, { length: -1 })).toThrow(RangeError)
    expect(() => mmap.map(f, { length: 1.5 })).toThrow(TypeError)
    expect(() => mmap.map(f, { offset: -1 })).toThrow(RangeError)
    expect(() => mmap.map(f, { offset: '1' as never })).toThrow(TypeError)
    expect(() => mmap.map(f, { length: bufferConstants.MAX_LENGTH + 1 })).toThrow(RangeError)
    expect(() => mmap.map(f, { write: 'yes' as never })).toThrow(TypeError)
    expect(() => mmap.map(f, { length: 1, create: true })).toThrow(TypeError) // create needs write
    expect(() => mmap.map(f, { write: true, create: true })).toThrow(TypeError) // create needs a length
    expect(() => mmap.map(f, { length: 1, write: true, create: true, mode: 0o1000 })).toThrow(RangeError)
    expect(() => mmap.map(f, { size: 1 } as never)).toThrow(TypeError)
    expect(() => mmap.map(f, null as never)).toThrow(TypeError)
    expect(fs.statSync(f).size).toBe(100)
  })

  // The path goes to open() as a C string: without this check everything
  // after a NUL byte was dropped and another file mapped ("ok.bin\0junk" → ok.bin).
  test('a path with a NUL byte → TypeError (not silently another file)', () => {
    const f = file('ok.bin', 'abc')
    expect(() => map(f + '\0junk')).toThrow(TypeError)
  })

  // Was a crash (double free in native/region.cc WrapRegion, as for a > 4 GiB
  // shm attach). In a child so that a regression cannot take this file down.
  test('a file above 4 GiB mapped whole → RangeError, not a crash', () => {
    const f = file('huge.bin')
    fs.writeFileSync(f, '')
    fs.truncateSync(f, 5 * GiB)
    const r = runNode(
      `let error; try { lib.mmap.map(process.argv[1]) } catch (e) { error = e.constructor.name }
       const mapped = require('node:fs').readFileSync('/proc/self/maps', 'utf8').includes(process.argv[1]);
       console.log(JSON.stringify({ error, mapped }))`,
      { args: [f] },
    )
    expect(r.signal, r.stderr).toBe(null)
    expect(r.json).toEqual({ error: 'RangeError', mapped: false })
  })

  test('ENOSPC at create time on a full filesystem (tiny tmpfs in a mount namespace of its own)', (ctx) => {
    if (!canUnshare('--mount')) ctx.skip('cannot make a private mount namespace here (unshare --mount)')
    const mnt = path.join(dir, 'mnt')
    fs.mkdirSync(mnt)
    const r = runNode(
      `const fs = require('node:fs'), path = require('node:path'), { spawnSync } = require('node:child_process');
       const mnt = process.argv[1];
       const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'shmkeep-test', mnt], { encoding: 'utf8' });
       if (m.status !== 0) { console.log(JSON.stringify({ skip: 'mount -t tmpfs failed: ' + (m.stderr || m.error) })); process.exit(0) }
       const out = {};
       const f = path.join(mnt, 'big.bin');
       try { lib.mmap.map(f, { length: 4 * 2 ** 20, write: true, create: true }); out.error = 'none' }
       catch (e) { out.error = { name: e.constructor.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message } }
       out.mapped = fs.readFileSync('/proc/self/maps', 'utf8').includes(f);
       const small = lib.mmap.map(path.join(mnt, 'small.bin'), { length: 4096, write: true, create: true });
       out.small = small.length; lib.mmap.unmap(small);
       console.log(JSON.stringify(out))`,
      { prefix: ['unshare', '--mount', '--propagation', 'private'], args: [mnt] },
    )
    expect(r.status, r.stderr).toBe(0)
    if (r.json?.skip) ctx.skip(r.json.skip)
    expect(r.json.error).toMatchObject({ name: 'SystemError', code: 'ENOSPC', errno: -28, syscall: 'fallocate' })
    expect(r.json.error.message).toContain(path.join(mnt, 'big.bin'))
    expect(r.json.mapped).toBe(false)
    expect(r.json.small).toBe(4096) // the filesystem still works for what fits
    expect(fs.readdirSync(mnt)).toEqual([]) // the tmpfs went with its namespace
  })

  test('no argument crashes the process (a child calls everything with odd values)', () => {
    const f = file('fuzz.bin', pattern(page))
    const r = runNode(
      `const { mmap } = lib; const f = process.argv[1];
       const odd = [undefined, null, -1, 0, 1, 1.5, NaN, Infinity, 2 ** 32, 2 ** 53, -(2 ** 53), '', 'x', '0x', {}, [], () => 1, Symbol('s'), 10n, true, Buffer.alloc(1)];
       const unexpected = []; let calls = 0;
       function tryIt(name, fn) {
         calls++;
         try { const r = fn(); if (Buffer.isBuffer(r) && r.length) mmap.unmap(r) }
         catch (e) { if (!(e instanceof TypeError || e instanceof RangeError || (e && typeof e.code === 'string' && e.code.startsWith('E')))) unexpected.push(name + ': ' + String(e)) }
       }
       const good = mmap.map(f, { write: true });
       for (const v of odd) {
         tryIt('path', () => mmap.map(v));
         tryIt('offset', () => mmap.map(f, { offset: v }));
         tryIt('length', () => mmap.map(f, { length: v }));
         tryIt('offset+length', () => mmap.map(f, { offset: v, length: 1 }));
         tryIt('write', () => mmap.map(f, { write: v }));
         tryIt('mode', () => mmap.map(f + '.new', { length: 1, write: true, create: true, mode: v }));
         tryIt('options', () => mmap.map(f, v));
         tryIt('sync', () => mmap.sync(v));
         tryIt('sync options', () => mmap.sync(good, v));
         tryIt('advise buffer', () => mmap.advise(v, 'normal'));
         tryIt('advise advice', () => mmap.advise(good, v));
         tryIt('unmap', () => mmap.unmap(v));
       }
       for (const a of ['toString', '__proto__', 'constructor', 'hasOwnProperty', 'valueOf']) tryIt('advise ' + a, () => mmap.advise(good, a));
       mmap.unmap(good);
       console.log(JSON.stringify({ calls, unexpected }))`,
      { args: [f] },
    )
    expect(r.signal, r.stderr).toBe(null)
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.unexpected).toEqual([])
    expect(r.json.calls).toBeGreaterThan(200)
  })
})

describe('mmap.unmap', () => {
  test('neuters the Buffer: length 0, byteLength 0, reads give undefined, no crash', () => {
    const f = file('n.bin', pattern(page))
    const b = mmap.map(f, { write: true })
    const view = b.subarray(10, 20)
    mmap.unmap(b)
    expect(b.length).toBe(0)
    expect(b.byteLength).toBe(0)
    expect(b.buffer.byteLength).toBe(0)
    expect(b[0]).toBeUndefined()
    expect(b.toString()).toBe('')
    expect(b.write('x')).toBe(0)
    expect(view.length).toBe(0)
    expect(view[0]).toBeUndefined()
    expect(fs.readFileSync('/proc/self/maps', 'utf8')).not.toContain(f)
    // The file keeps its bytes.
    expect(fs.readFileSync(f).equals(pattern(page))).toBe(true)
  })

  test('unmapping twice is harmless', () => {
    const b = mmap.map(file('t.bin', 'abc'))
    mmap.unmap(b)
    expect(() => mmap.unmap(b)).not.toThrow()
  })

  test('sync / advise / unmap of a Buffer that map did not return → TypeError', () => {
    const b = map(file('f.bin', 'abc'))
    for (const other of [Buffer.alloc(3), Buffer.from(b), b.subarray(1)]) {
      expect(() => mmap.sync(other)).toThrow(TypeError)
      expect(() => mmap.advise(other, 'normal')).toThrow(TypeError)
      expect(() => mmap.unmap(other)).toThrow(TypeError)
    }
    expect(b.toString()).toBe('abc')
  })

  test('sync and advise after unmap → "already unmapped" (DetachedError naming the path), not EBADF or a crash', () => {
    const f = file('bad.bin', 'abc')
    const b = mmap.map(f, { write: true })
    mmap.unmap(b)
    const e = caught(() => mmap.sync(b))
    expect(e).toBeInstanceOf(DetachedError)
    expect(e.code).toBe('ERR_SHMKEEP_DETACHED')
    expect(e.message).toBe(`mmap.sync: the Buffer is already unmapped (${f})`)
    expect(caught(() => mmap.sync(b, { async: true }))).toBeInstanceOf(DetachedError)
    expect(caught(() => mmap.advise(b, 'willneed')).message).toBe(`mmap.advise: the Buffer is already unmapped (${f})`)
  })

  test('a mapping garbage-collected while mapped is unmapped', () => {
    const f = file('gc.bin', pattern(page))
    const r = runNode(
      `const fs = require('node:fs'); const f = process.argv[1];
       const mapped = () => fs.readFileSync('/proc/self/maps', 'utf8').includes(f);
       (() => { const b = lib.mmap.map(f); b[0] })();
       const out = { before: mapped() };
       let rounds = 0;
       (function settle() { global.gc(); setImmediate(() => { if (!mapped() || ++rounds > 50) { out.after = mapped(); console.log(JSON.stringify(out)) } else settle() }) })();`,
      { nodeArgs: ['--expose-gc'], args: [f] },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toEqual({ before: true, after: false })
  })
})

describe('mmap.advise / mmap.sync', () => {
  test('known advice works on read-write and read-only maps', () => {
    const f = file('adv.bin', pattern(16 * page))
    const rw = map(f, { write: true })
    const ro = map(f, { offset: 5, length: 3 * page })
    for (const advice of ['normal', 'random', 'sequential', 'willneed', 'dontneed', 'dontfork', 'dofork', 'dontdump', 'dodump', 'populate_read'] as const) {
      mmap.advise(rw, advice)
      mmap.advise(ro, advice)
    }
    mmap.advise(rw, 'populate_write')
    // Advice changes no bytes of a file mapping.
    expect(rw.equals(pattern(16 * page))).toBe(true)
    expect(ro.equals(pattern(16 * page).subarray(5, 5 + 3 * page))).toBe(true)
  })

  test('advice the kernel refuses is an error with a code (populate_write on a read-only map → EINVAL)', () => {
    const f = file('adv2.bin', pattern(page))
    const e = caught(() => mmap.advise(map(f), 'populate_write'))
    expect(e.code).toBe('EINVAL')
    expect(e.syscall).toBe('madvise')
    expect(e.message).toContain(f)
  })

  test('an unknown advice → TypeError that names the known ones', () => {
    const b = map(file('adv3.bin', 'abc'))
    expect(() => mmap.advise(b, 'bogus' as never)).toThrow(TypeError)
    expect(() => mmap.advise(b, 'bogus' as never)).toThrow(/sequential/)
    expect(() => mmap.advise(b, undefined as never)).toThrow(TypeError)
    expect(() => mmap.advise(b, 4 as never)).toThrow(TypeError)
  })

  // Names from Object.prototype used to reach the addon ("A number was expected").
  test('inherited names are unknown advice too, with the same message', () => {
    const b = map(file('adv4.bin', 'abc'))
    for (const advice of ['toString', 'constructor', '__proto__']) {
      expect(() => mmap.advise(b, advice as never)).toThrow(/unknown advice/)
    }
  })

  test('sync options are checked', () => {
    const b = map(file('s2.bin', 'abc'), { write: true })
    expect(() => mmap.sync(b, { async: 'yes' as never })).toThrow(TypeError)
    expect(() => mmap.sync(b, { wait: true } as never)).toThrow(TypeError)
    mmap.sync(b, {})
  })
})

describe('the mapped ArrayBuffer cannot move to another thread', () => {
  test('structuredClone with transfer throws (Node ≥ 21) or copies (Node 20); the map stays intact', () => {
    const f = file('x.bin', 'mapped bytes')
    const b = map(f, { write: true })
    let clone: ArrayBuffer | undefined
    try {
      clone = structuredClone(b.buffer as ArrayBuffer, { transfer: [b.buffer as ArrayBuffer] })
    } catch (e) {
      expect((e as Error).name).toBe('DataCloneError')
    }
    expect(b.length).toBe(12)
    expect(b.toString()).toBe('mapped bytes')
    if (clone) {
      new Uint8Array(clone)[0] = 0x4d
      expect(b.toString()).toBe('mapped bytes')
    }
    mmap.sync(b)
  })
})
