/**
 * Detaching or unmapping while Node itself is still using the memory: zlib,
 * fs, sockets and crypto hand the Buffer's address to libuv's thread pool or
 * to a later write, and may still read or write through it after
 * `shm.detach` / `mmap.unmap` returned. That must never crash the process
 * (the address stays mapped, by a private placeholder, until the Buffer is
 * collected) and never reach a later attachment or mapping that the kernel
 * put at the same address.
 *
 * Each case runs in a child (`unshare --ipc`, so a crash leaves nothing
 * behind and cannot take the test runner down): segment A is filled with 7s,
 * handed to the consumer and detached at once; segment B, attached right
 * after (where the kernel is free to reuse A's address), is filled with 9s.
 * A reader must never see a 9; a writer must never change B.
 *
 * Keys of this file: 0x5180xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runNode, tempDir } from './helpers'

const MiB = 2 ** 20

let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

/**
 * Child code shared by the cases. `take()` gives A (7s) and `release(a)`
 * detaches it; `next()` gives B (9s). `finish(report)` checks B and prints
 * the JSON line the test reads.
 */
function shmCase(consumer: string, size = 16 * MiB): string {
  return `
    const { shm } = lib;
    const fs = require('node:fs');
    const size = ${size};
    const idA = shm.get(0x51800001, { size, create: true, exclusive: true });
    const idB = shm.get(0x51800002, { size, create: true, exclusive: true });
    const take = () => shm.attach(idA).fill(7);
    const release = (a) => shm.detach(a);
    const next = () => shm.attach(idB).fill(9);
    const finish = (report) => {
      report.bChanged = b.some((x) => x !== 9);
      report.aNattch = shm.stat(idA).nattch;
      shm.detach(b); shm.remove(idA); shm.remove(idB);
      console.log(JSON.stringify(report));
    };
    let b;
    ${consumer}
  `
}

function mmapCase(consumer: string, dir: string, size = 16 * MiB): string {
  return `
    const { mmap } = lib;
    const fs = require('node:fs');
    const size = ${size};
    const take = () => mmap.map(${JSON.stringify(path.join(dir, 'a.bin'))}, { length: size, write: true, create: true }).fill(7);
    const release = (a) => mmap.unmap(a);
    const next = () => mmap.map(${JSON.stringify(path.join(dir, 'b.bin'))}, { length: size, write: true, create: true }).fill(9);
    const finish = (report) => {
      report.bChanged = b.some((x) => x !== 9);
      mmap.unmap(b);
      report.bFileChanged = fs.readFileSync(${JSON.stringify(path.join(dir, 'b.bin'))}).some((x) => x !== 9);
      console.log(JSON.stringify(report));
    };
    let b;
    ${consumer}
  `
}

/** A reader: gzip A, detach, attach B; what gzip read must hold no 9 (B's bytes). */
const gzipConsumer = `
  const zlib = require('node:zlib');
  const a = take();
  zlib.gzip(a, (err, out) => {
    const plain = err ? Buffer.alloc(0) : zlib.gunzipSync(out);
    finish({ error: err && err.message, length: plain.length, sawB: plain.includes(9), onlyAOrZeros: plain.every((x) => x === 7 || x === 0) });
  });
  release(a);
  b = next();
`

function expectSurvived(r: ReturnType<typeof runNode>): void {
  expect(r.signal, `the child died of ${r.signal}: ${r.stderr}`).toBe(null)
  expect(r.status, r.stderr).toBe(0)
}

describe('shm.detach while a Node consumer still holds the memory', () => {
  test('zlib.gzip then detach: no crash; gzip reads A or zeros, never the next attachment', () => {
    const r = runNode(shmCase(gzipConsumer), { prefix: ['unshare', '--ipc'] })
    expectSurvived(r)
    expect(r.json).toMatchObject({ length: 16 * MiB, sawB: false, onlyAOrZeros: true, bChanged: false, aNattch: 0 })
  })

  test('fs.read into the Buffer then detach: the read lands in a placeholder, never in the next attachment', () => {
    const r = runNode(
      shmCase(
        `const a = take();
         const fd = fs.openSync('/dev/urandom', 'r');
         fs.read(fd, a, 0, a.length, null, (err, n) => {
           fs.closeSync(fd);
           finish({ error: err && err.code, n });
         });
         release(a);
         b = next();`,
        64 * MiB,
      ),
      { prefix: ['unshare', '--ipc'] },
    )
    expectSurvived(r)
    // Not a short read: the whole read lands (in the placeholder), rather than
    // stopping with EFAULT where the attachment went.
    expect(r.json).toMatchObject({ error: null, n: 64 * MiB, bChanged: false, aNattch: 0 })
  })

  test('a socket write then detach: the peer receives A or zeros, never the next attachment', () => {
    const r = runNode(
      shmCase(
        `const net = require('node:net');
         const server = net.createServer((sock) => {
           let got = 0, sawB = false, other = false;
           sock.on('data', (d) => { got += d.length; if (d.includes(9)) sawB = true; if (!d.every((x) => x === 7 || x === 0)) other = true; });
           sock.on('end', () => { server.close(); finish({ got, sawB, other }); });
         });
         server.listen(0, '127.0.0.1', () => {
           const client = net.connect(server.address().port, '127.0.0.1', () => {
             const a = take();
             client.end(a);
             release(a);
             b = next();
           });
         });`,
      ),
      { prefix: ['unshare', '--ipc'] },
    )
    expectSurvived(r)
    expect(r.json).toMatchObject({ got: 16 * MiB, sawB: false, other: false, bChanged: false, aNattch: 0 })
  })

  test('crypto.randomFill then detach: the random bytes never land in the next attachment', () => {
    const r = runNode(
      shmCase(
        `const crypto = require('node:crypto');
         const a = take();
         crypto.randomFill(a, (err) => finish({ error: err && err.message }));
         release(a);
         b = next();`,
        64 * MiB,
      ),
      { prefix: ['unshare', '--ipc'] },
    )
    expectSurvived(r)
    expect(r.json).toMatchObject({ error: null, bChanged: false, aNattch: 0 })
  })
})

describe('mmap.unmap while a Node consumer still holds the memory', () => {
  test('zlib.gzip then unmap: no crash; gzip reads the file or zeros, never the next mapping', () => {
    const dir = fs.mkdtempSync(path.join(tmp.dir, 'gzip-'))
    const r = runNode(mmapCase(gzipConsumer, dir))
    expectSurvived(r)
    expect(r.json).toMatchObject({ length: 16 * MiB, sawB: false, onlyAOrZeros: true, bChanged: false, bFileChanged: false })
  })

  test('crypto.randomFill then unmap: the bytes reach neither the next mapping nor its file', () => {
    const dir = fs.mkdtempSync(path.join(tmp.dir, 'fill-'))
    const r = runNode(
      mmapCase(
        `const crypto = require('node:crypto');
         const a = take();
         crypto.randomFill(a, (err) => finish({ error: err && err.message }));
         release(a);
         b = next();`,
        dir,
        64 * MiB,
      ),
    )
    expectSurvived(r)
    expect(r.json).toMatchObject({ error: null, bChanged: false, bFileChanged: false })
  })
})

describe('placeholders do not pile up', () => {
  // Each detach leaves a placeholder until the Buffer is collected, which
  // cannot happen inside a synchronous loop: they must not exhaust
  // vm.max_map_count (65530 by default).
  test('100,000 attach/detach in a synchronous loop: no error, and the mappings stay few', () => {
    const r = runNode(
      `const { shm } = lib;
       const fs = require('node:fs');
       const maps = () => fs.readFileSync('/proc/self/maps', 'utf8').split('\\n').length;
       const id = shm.get(0x51800010, { size: 4096, create: true, exclusive: true });
       const before = maps();
       let error = null, done = 0;
       try {
         for (; done < 100000; done++) shm.detach(shm.attach(id));
       } catch (e) { error = e.message }
       const after = maps();
       const nattch = shm.stat(id).nattch;
       shm.remove(id);
       console.log(JSON.stringify({ error, done, grew: after - before, nattch }))`,
      { prefix: ['unshare', '--ipc'] },
    )
    expectSurvived(r)
    expect(r.json.error).toBe(null)
    expect(r.json.done).toBe(100000)
    expect(r.json.nattch).toBe(0)
    expect(r.json.grew).toBeLessThan(1000)
  })
})
