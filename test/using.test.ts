/**
 * `using` (Symbol.dispose) releases what `shm.attach` and `mmap.map` return at
 * the end of a block, also when it throws. Quick (one child process), so it
 * runs in `npm test`; the 100,000-iteration GC loops stay in
 * test/slow/memory.test.ts. The child runs in `unshare --ipc`: its key cannot
 * meet another file's.
 */
import fs from 'node:fs'
import path from 'node:path'
import ts from 'typescript'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { runNode, tempDir } from './helpers'

let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

describe('using (Symbol.dispose)', () => {
  // Node 20 has Symbol.dispose but cannot parse `using`: run what TypeScript
  // makes of it for an ES2022 target, as an app compiled with tsc would.
  test('`using` detaches an attachment and unmaps a mapping at the end of the block, also when it throws', () => {
    const f = path.join(tmp.dir, 'using.bin')
    const source = `
      declare const lib: typeof import('../src/index')
      const id = lib.shm.get(0x51810002, { size: 4096, create: true, exclusive: true })
      const out: Record<string, unknown> = {}
      let kept: Buffer | undefined
      {
        using b = lib.shm.attach(id)
        using m = lib.mmap.map(${JSON.stringify(f)}, { length: 4096, write: true, create: true })
        b.write('inside')
        m.write('mapped')
        kept = b
        out.inside = lib.shm.stat(id).nattch
      }
      out.after = lib.shm.stat(id).nattch
      out.length = kept.length
      out.attached = lib.shm.isAttached(kept)
      try {
        using b = lib.shm.attach(id)
        out.during = lib.shm.stat(id).nattch
        throw new Error('boom ' + b.length)
      } catch (e) {
        out.caught = (e as Error).message
      }
      out.afterThrow = lib.shm.stat(id).nattch
      const again = lib.shm.attach(id)
      out.text = again.toString('latin1', 0, 6)
      lib.shm.detach(again)
      lib.shm.remove(id)
      console.log(JSON.stringify(out))
    `
    const js = ts.transpileModule(source, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS } }).outputText
    expect(js).not.toMatch(/\busing b\b/) // down-levelled: Node 20 could not parse it
    const r = runNode(js, { prefix: ['unshare', '--ipc'] })
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toEqual({ inside: 1, after: 0, length: 0, attached: false, during: 1, caught: 'boom 4096', afterThrow: 0, text: 'inside' })
    expect(fs.readFileSync(f, 'latin1').slice(0, 6)).toBe('mapped')
  })
})
