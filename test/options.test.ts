/**
 * Errors a Node developer can catch, and options that are checked: every
 * public function refuses unknown options, values of the wrong kind and out
 * of range before it acts (a TypeError / RangeError naming the option, with
 * Node's codes); keys are numbers or strings everywhere, with one rule for
 * negative ones; modes show in octal; use after detach/unmap says so; a
 * shutdown step that blocks past its timeout is reported as overrunning it.
 *
 * Keys of this file: 0x5182xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import {
  createShutdown,
  DetachedError,
  diff,
  formatKey,
  inspect,
  KeyRanges,
  list,
  listGenerations,
  lockFile,
  mmap,
  OptionRangeError,
  OptionTypeError,
  parseKey,
  prune,
  restore,
  shm,
  silentLogger,
  snapshot,
  StateFileError,
  SystemError,
  verify,
} from '../src/index'
import { tempDir } from './helpers'

let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

/** What a call threw (synchronously or as a rejection). */
async function thrown(fn: () => unknown): Promise<any> {
  try {
    await fn()
  } catch (e) {
    return e
  }
  throw new Error('expected a throw')
}

/** A state dir path that no check may create. */
function untouched(): string {
  return path.join(tmp.dir, `never-${Math.random().toString(36).slice(2)}`)
}

describe('every options object is checked before anything happens', () => {
  const cases: Array<[string, (dir: string) => unknown, string, 'type' | 'range']> = [
    ['snapshot: a typo', (d) => snapshot({ stateDir: d, kep: 3 } as never), 'kep', 'type'],
    ['snapshot: keep of the wrong kind', (d) => snapshot({ stateDir: d, keep: '3' as never }), 'keep', 'type'],
    ['snapshot: keep below 0', (d) => snapshot({ stateDir: d, keep: -1 }), 'keep', 'range'],
    ['snapshot: an unknown reason', (d) => snapshot({ stateDir: d, reason: 'nightly' as never }), 'reason', 'type'],
    ['snapshot: a filter typo', (d) => snapshot({ stateDir: d, filter: { key: '0x1' } as never }), 'key', 'type'],
    ['snapshot: a key that is not one', (d) => snapshot({ stateDir: d, filter: { keys: [{}] as never } }), 'keys', 'type'],
    ['snapshot: a key beyond 32 bits', (d) => snapshot({ stateDir: d, filter: { keys: [2 ** 32] } }), 'keys', 'range'],
    ['snapshot: a signal that is not an AbortSignal', (d) => snapshot({ stateDir: d, signal: {} as never }), 'signal', 'type'],
    ['snapshot: a log that is not a Logger', (d) => snapshot({ stateDir: d, log: console.log as never }), 'log', 'type'],
    ['snapshot: no stateDir', () => snapshot({} as never), 'stateDir', 'type'],
    ['restore: a typo', (d) => restore({ stateDir: d, onconflict: 'skip' } as never), 'onconflict', 'type'],
    ['restore: an unknown policy', (d) => restore({ stateDir: d, onConflict: 'keep' as never }), 'onConflict', 'type'],
    ['restore: lockTimeoutMs not an integer', (d) => restore({ stateDir: d, lockTimeoutMs: 1.5 }), 'lockTimeoutMs', 'type'],
    ['prune: keep below 0', (d) => prune(d, { keep: -2 }), 'keep', 'range'],
    ['prune: a typo', (d) => prune(d, { keep: 1, dryrun: true } as never), 'dryrun', 'type'],
    ['diff: a filter typo', (d) => diff(d, { owner: [0] } as never), 'owner', 'type'],
    ['diff: minSize below 0', (d) => diff(d, { minSize: -1 }), 'minSize', 'range'],
    ['verify: a stateDir that is not a path', () => verify(42 as never), 'stateDir', 'type'],
    ['inspect: a stateDir that is not a path', () => inspect('' as never), 'stateDir', 'type'],
    ['listGenerations: a stateDir that is not a path', () => listGenerations(null as never), 'stateDir', 'type'],
    ['list: a filter typo', () => list({ exclude: '1' } as never), 'exclude', 'type'],
    ['lockFile: timeoutMs below 0', (d) => lockFile(path.join(d, 'LOCK'), { timeoutMs: -1 }), 'timeoutMs', 'range'],
    ['createShutdown: a typo', (d) => createShutdown({ stateDir: d, grce: 3 } as never), 'grce', 'type'],
    ['createShutdown: grace 0', (d) => createShutdown({ stateDir: d, grace: 0 }), 'grace', 'range'],
    ['createShutdown: keys that are not keys', (d) => createShutdown({ stateDir: d, keys: [true as never] }), 'keys', 'type'],
    ['shm.get: a typo', () => shm.get(0x51820001, { size: 4096, craete: true } as never), 'craete', 'type'],
    ['mmap.map: a typo', (d) => mmap.map(path.join(d, 'f'), { lenght: 1 } as never), 'lenght', 'type'],
  ]
  for (const [name, call, option, kind] of cases) {
    test(name, async () => {
      const dir = untouched()
      const e = await thrown(() => call(dir))
      expect(e).toBeInstanceOf(kind === 'type' ? TypeError : RangeError)
      expect(e).toBeInstanceOf(kind === 'type' ? OptionTypeError : OptionRangeError)
      expect(e.option).toBe(option)
      expect(e.message).toContain(option)
      expect(e.code).toMatch(kind === 'type' ? /^ERR_INVALID_ARG_(TYPE|VALUE)$/ : /^ERR_OUT_OF_RANGE$/)
      expect(fs.existsSync(dir)).toBe(false) // refused before touching anything
    })
  }

  test('a shutdown step with an unknown option or a bad timeout', () => {
    const s = createShutdown({ stateDir: untouched(), signals: [], exit: false, log: silentLogger })
    expect(() => s.step('x', () => {}, { timout: 1 } as never)).toThrow(/step "x": unknown option "timout"/)
    expect(() => s.step('x', () => {}, { timeout: -1 })).toThrow(OptionRangeError)
    s.dispose()
  })
})

describe('keys: numbers wherever keys go, one rule for negative ones', () => {
  test('filter.keys takes numbers (as createShutdown keys do): snapshot saves just that segment', async () => {
    const id = shm.get(0x51820010, { size: 4096, create: true, exclusive: true })
    const other = shm.get(0x51820011, { size: 4096, create: true, exclusive: true })
    const dir = path.join(tmp.dir, 'numbers')
    try {
      const r = await snapshot({ stateDir: dir, filter: { keys: [0x51820010] } })
      expect(r.segments.map((s) => s.key)).toEqual(['0x51820010'])
      const d = await diff(dir, { keys: [0x51820010, '0x51820011'] })
      expect(d.segments.map((s) => s.key).sort()).toEqual(['0x51820010', '0x51820011'])
      expect(list({ keys: 0x51820011 }).map((s) => s.id)).toEqual([other])
    } finally {
      shm.remove(id)
      shm.remove(other)
    }
  })

  test('−2³¹…−1 are the two’s complement of 0x80000000…0xffffffff, in numbers, strings and key lists; printed 0x%08x', () => {
    expect(parseKey(-559038737)).toBe(0xdeadbeef) // how /proc/sysvipc/shm prints key 0xdeadbeef
    expect(parseKey('-559038737')).toBe(0xdeadbeef)
    expect(parseKey(-1)).toBe(0xffffffff)
    expect(parseKey(-(2 ** 31))).toBe(0x80000000)
    expect(formatKey(parseKey(-559038737))).toBe('0xdeadbeef')
    expect(new KeyRanges([-559038737]).has(0xdeadbeef)).toBe(true)
    expect(() => parseKey(-(2 ** 31) - 1)).toThrow(RangeError)
    expect(() => parseKey(2 ** 32)).toThrow(RangeError)
  })
})

describe('messages a developer can act on', () => {
  test('modes are shown in octal', () => {
    const e = (() => {
      try {
        shm.get(0x51820020, { size: 4096, create: true, mode: 0o1777 })
      } catch (err) {
        return err as Error
      }
    })()
    expect(e).toBeInstanceOf(OptionRangeError)
    expect(e!.message).toBe('mode must be between 0o000 and 0o777 (permission bits only), got 0o1777')
  })

  test('system errors are SystemError (code, errno, syscall); a missing generation is a StateFileError', async () => {
    const e = await thrown(() => shm.get(0x51820021))
    expect(e).toBeInstanceOf(SystemError)
    expect(e).toMatchObject({ code: 'ENOENT', errno: -2, syscall: 'shmget' })
    const dir = path.join(tmp.dir, 'state-error')
    await snapshot({ stateDir: dir, filter: { keys: [0x51820022] } })
    const s = await thrown(() => inspect(dir, 'gen-999'))
    expect(s).toBeInstanceOf(StateFileError)
  })

  test('use after detach / unmap says "already detached" / "already unmapped"', async () => {
    const id = shm.get(0x51820023, { size: 4096, create: true, exclusive: true })
    try {
      const b = shm.attach(id)
      shm.detach(b)
      const e = await thrown(() => shm.checksum(b))
      expect(e).toBeInstanceOf(DetachedError)
      expect(e.message).toMatch(/already detached/)
    } finally {
      shm.remove(id)
    }
    const m = mmap.map(path.join(tmp.dir, 'unmapped.bin'), { length: 4096, write: true, create: true })
    mmap.unmap(m)
    expect(() => mmap.sync(m)).toThrow(/already unmapped/)
  })

  test('a synchronous step that blocks past its timeout is reported as overrunning it, not "done"', async () => {
    const s = createShutdown({ stateDir: path.join(tmp.dir, 'overrun'), signals: [], exit: false, log: silentLogger, keys: [0x51820030] })
    s.step('blocks', () => {
      const end = Date.now() + 300
      while (Date.now() < end) {
        // the event loop is blocked: no timer can fire
      }
    }, { timeout: 0.05 })
    s.step('next', () => {}, { timeout: 1 })
    const r = await s.run()
    expect(r.steps[0]).toMatchObject({ name: 'blocks', status: 'timed-out' })
    expect(r.steps[0]!.error).toMatch(/overran/)
    expect(r.steps[1]).toMatchObject({ name: 'next', status: 'ok' })
    expect(r.exitCode).toBe(3)
  })
})

describe('consistent and cancellable', () => {
  test('inspect and listGenerations return Promises, like verify, diff and prune', async () => {
    const dir = path.join(tmp.dir, 'promises')
    const id = shm.get(0x51820040, { size: 4096, create: true, exclusive: true })
    try {
      await snapshot({ stateDir: dir, filter: { keys: [0x51820040] } })
      const gens = listGenerations(dir)
      expect(gens).toBeInstanceOf(Promise)
      expect((await gens).length).toBe(1)
      const detail = inspect(dir)
      expect(detail).toBeInstanceOf(Promise)
      expect((await detail).segments.map((s) => s.key)).toEqual(['0x51820040'])
      // A missing generation is a rejection, not a synchronous throw.
      const missing = inspect(dir, 'gen-999')
      expect(missing).toBeInstanceOf(Promise)
      await expect(missing).rejects.toBeInstanceOf(StateFileError)
    } finally {
      shm.remove(id)
    }
  })

  test('restore, verify and diff take an AbortSignal: aborted, they reject with its reason and change nothing', async () => {
    const dir = path.join(tmp.dir, 'abort')
    const id = shm.get(0x51820041, { size: 4096, create: true, exclusive: true })
    await snapshot({ stateDir: dir, filter: { keys: [0x51820041] } })
    shm.remove(id)
    const signal = AbortSignal.abort()
    await expect(verify(dir, undefined, { signal })).rejects.toMatchObject({ name: 'AbortError' })
    await expect(diff(dir, { keys: [0x51820041] }, { signal })).rejects.toMatchObject({ name: 'AbortError' })
    await expect(restore({ stateDir: dir, signal })).rejects.toThrow() // lineage's RestoreError: interrupted, nothing restored
    expect(list({ keys: [0x51820041] })).toEqual([]) // nothing restored
    expect((await listGenerations(dir)).length).toBe(1) // nothing written either
    await expect(verify(dir, undefined, { signa: 1 } as never)).rejects.toBeInstanceOf(OptionTypeError)
  })
})
