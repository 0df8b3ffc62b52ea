/**
 * Memory the garbage collector sees: every attachment and mapping is reported
 * to V8 as external memory (at least 64 KiB each), so a program that drops
 * Buffers without detaching gets them collected — and released when the event
 * loop turns — long before vm.max_map_count (65530) or nattch run out.
 * (`using`, Symbol.dispose: test/using.test.ts, in `npm test`.)
 *
 * Loops run in a child (`unshare --ipc`) so that /proc/self/maps counts only
 * its mappings. In test/slow: 100,000-iteration loops, and how soon V8's
 * concurrent marking finishes depends on the machine's load (idle: a peak
 * of ~40 attachments; before the external-memory reporting: ~4,000). Keys of this file: 0x5181xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runNode, tempDir } from '../helpers'

let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

/**
 * Child code: `make()` 100,000 times without releasing, yielding every 1,000;
 * `count()` (cheap: a big allocation would make V8 collect by itself) is
 * sampled every `every` iterations (at a yield) and the peak reported.
 */
function dropLoop(setup: string, make: string, count: string, done: string, { every = 1000 } = {}): string {
  return `
    const fs = require('node:fs');
    const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').length;
    ${setup}
    const base = ${count};
    (async () => {
      let peak = 0, error = null;
      try {
        for (let i = 1; i <= 100000; i++) {
          ${make};
          if (i % 1000 === 0) {
            await new Promise((resolve) => setImmediate(resolve));
            if (i % ${every} === 0) peak = Math.max(peak, ${count} - base);
          }
        }
      } catch (e) { error = e.message }
      const report = { peak, error };
      ${done}
      console.log(JSON.stringify(report));
    })();
  `
}

describe('dropped Buffers are collected and released as the loop yields', () => {
  test('100,000 shm.attach dropped without detach, yielding every 1,000: nattch stays bounded', () => {
    const r = runNode(
      dropLoop(
        `const id = lib.shm.get(0x51810001, { size: 4096, create: true, exclusive: true });`,
        `lib.shm.attach(id)[0] = 1`,
        `lib.shm.stat(id).nattch`,
        `lib.shm.remove(id);`,
      ),
      { prefix: ['unshare', '--ipc'] },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.error).toBe(null)
    expect(r.json.peak).toBeLessThan(2500)
  })

  test('100,000 mmap.map dropped without unmap, yielding every 1,000: the mappings stay bounded', () => {
    const f = path.join(tmp.dir, 'loop.bin')
    fs.writeFileSync(f, Buffer.alloc(4096, 1))
    const r = runNode(dropLoop('', `lib.mmap.map(${JSON.stringify(f)})[0]`, 'maps()', '', { every: 10000 }))
    expect(r.status, r.stderr).toBe(0)
    expect(r.json.error).toBe(null)
    expect(r.json.peak).toBeLessThan(2500)
  })
})
