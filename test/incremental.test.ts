/**
 * Incremental snapshots from the library's side: an unchanged segment shares
 * the previous generation's data file; a frozen checkpoint writes only the
 * changed chunks while the app is stopped and copies the rest afterwards,
 * checked against their CRCs; a damaged previous file is never carried over.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { canUnshare, root, runNode, tempDir } from './helpers'

let dir: string
let cleanup: () => void
beforeEach(() => ({ dir, cleanup } = tempDir()))
afterEach(() => cleanup())

/** Run a script with `lib` (dist/) in a new IPC namespace of its own; its last stdout line is JSON. */
function inNamespace(code: string) {
  const r = runNode(`(async () => { ${code} })().catch((e) => { console.log(JSON.stringify({ error: e.message })); })`, { prefix: ['unshare', '--ipc'] })
  expect(r.status, r.stderr).toBe(0)
  return r.json
}

const MiB = 1 << 20

test('unchanged: linked; one chunk changed under a freeze: only it is written before the thaw, the rest copied after; both restore exactly', () => {
  const state = path.join(dir, 'state')
  const r = inNamespace(`
    const { shm, snapshot } = lib
    const fs = require('fs'), path = require('path')
    const id = shm.get(0x6100, { size: 16 * ${MiB}, create: true })
    const b = shm.attach(id)
    for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
    const first = await snapshot({ stateDir: '${state}' })
    const same = await snapshot({ stateDir: '${state}', afterCopy: () => {} })
    b.write('changed', 9 * ${MiB})
    let thawedAfter
    const frozen = await snapshot({ stateDir: '${state}', keep: 5, afterCopy: () => { thawedAfter = frozenBytes() } })
    function frozenBytes() { return fs.readdirSync('${state}').filter((n) => n.startsWith('.tmp-')).map((n) => fs.statSync(path.join('${state}', n, fs.readdirSync(path.join('${state}', n)).find((f) => f.endsWith('.data')))).blocks * 512)[0] }
    console.log(JSON.stringify({ first: first.segments[0], same: same.segments[0], frozen: frozen.segments[0], thawedAfter, gens: [first.generation, same.generation, frozen.generation] }))
  `)
  expect(r.error).toBeUndefined()
  expect(r.first.bytesWritten).toBe(16 * MiB)
  expect(r.same).toMatchObject({ unchanged: true, bytesWritten: 0 })
  // While frozen, only the changed 4 MiB chunk was on disk; afterwards the rest was copied in.
  expect(r.thawedAfter).toBeLessThanOrEqual(4 * MiB + 64 * 1024)
  expect(r.frozen.bytesWritten).toBe(16 * MiB)
  const ino = (g: string) => fs.statSync(path.join(state, g, '00006100-0.data')).ino
  expect(ino(r.gens[1])).toBe(ino(r.gens[0]))
  expect(ino(r.gens[2])).not.toBe(ino(r.gens[0]))
  // Every generation restores to exactly what was saved.
  for (const [gen, changed] of [[r.gens[1], false], [r.gens[2], true]] as const) {
    const back = inNamespace(`
      const { shm, restore } = lib
      await restore({ stateDir: '${state}', generation: '${gen}' })
      const b = shm.attach(shm.get(0x6100))
      let ok = true
      for (let i = 0; i < b.length; i += 4096) if (i !== 9 * ${MiB} && b.readUInt32LE(i) !== ((i * 2654435761) >>> 0)) ok = false
      console.log(JSON.stringify({ ok, at9: b.toString('latin1', 9 * ${MiB}, 9 * ${MiB} + 7) }))
    `)
    expect(back.ok).toBe(true)
    if (changed) expect(back.at9).toBe('changed')
  }
})

test('a damaged previous data file is never carried: the frozen checkpoint is abandoned, CURRENT stays, the next full one is good', () => {
  const state = path.join(dir, 'state')
  const r = inNamespace(`
    const { shm, snapshot } = lib
    const fs = require('fs')
    const id = shm.get(0x6200, { size: 12 * ${MiB}, create: true })
    const b = shm.attach(id)
    b.fill(7)
    const first = await snapshot({ stateDir: '${state}' })
    // Bit rot in chunk 0 of the saved file; the app changes chunk 2.
    const fd = fs.openSync('${state}/' + first.generation + '/00006200-0.data', 'r+')
    fs.writeSync(fd, Buffer.from([9]), 0, 1, 100)
    fs.closeSync(fd)
    // Unchanged segment, damaged file: a frozen checkpoint must not link it.
    let unchangedError
    try { await snapshot({ stateDir: '${state}', afterCopy: () => {} }) } catch (e) { unchangedError = e.message }
    b.write('new', 9 * ${MiB})
    let error
    try { await snapshot({ stateDir: '${state}', afterCopy: () => {} }) } catch (e) { error = e.message }
    const current = fs.readFileSync('${state}/CURRENT', 'utf8').trim()
    const full = await snapshot({ stateDir: '${state}', incremental: false })
    console.log(JSON.stringify({ unchangedError, error, current, first: first.generation, full: full.segments[0].bytesWritten }))
  `)
  expect(r.unchangedError).toMatch(/the previous generation's .* fails its checksums: this checkpoint is abandoned/)
  expect(r.error).toMatch(/chunk 0 of the previous generation's .* fails its checksum/)
  expect(r.current).toBe(r.first)
  expect(r.full).toBe(12 * MiB)
})

test('an independent fallback: after a checkpoint (not inside it), the generation before CURRENT gets its own copy of the file they shared; CURRENT\'s file damaged → restore falls back to it with the right bytes (without the copy: nothing verifies)', () => {
  for (const reason of ['checkpoint', 'manual'] as const) {
    const state = path.join(dir, `state-${reason}`)
    const r = inNamespace(`
      const { shm, snapshot } = lib
      const id = shm.get(0x6300, { size: 6 * ${MiB}, create: true })
      const b = shm.attach(id)
      for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
      const { keepFallback } = require(${JSON.stringify(path.join(root, 'dist', 'state', 'fallback.js'))})
      const first = await snapshot({ stateDir: '${state}', reason: '${reason}' })
      const second = await snapshot({ stateDir: '${state}', reason: '${reason}' })
      // The checkpoint itself makes no copy (off its critical path): run's checkpointer calls keepFallback after it.
      const linksAfterCheckpoint = require('fs').statSync('${state}/' + second.generation + '/00006300-0.data').nlink
      const made = '${reason}' === 'checkpoint' ? await keepFallback({ stateDir: '${state}', log: lib.silentLogger }) : undefined
      console.log(JSON.stringify({ gens: [first.generation, second.generation], unchanged: second.segments[0].unchanged, pruned: second.pruned.removed, linksAfterCheckpoint, made }))
    `)
    expect(r.unchanged).toBe(true)
    expect(r.pruned).toEqual([])
    expect(r.linksAfterCheckpoint).toBe(2)
    const file = (g: string) => path.join(state, g, '00006300-0.data')
    const [g1, g2] = r.gens
    if (reason === 'checkpoint') {
      expect(r.made).toBe(g1)
      expect(fs.statSync(file(g2)).ino).not.toBe(fs.statSync(file(g1)).ino)
      expect(fs.statSync(file(g2)).nlink).toBe(1)
      // A copy, not a reflink or a link: the same bytes, holes and all.
      expect(fs.readFileSync(file(g1)).equals(fs.readFileSync(file(g2)))).toBe(true)
    } else {
      expect(fs.statSync(file(g2)).ino).toBe(fs.statSync(file(g1)).ino)
    }
    // Damage CURRENT's file (chunk 1).
    const fd = fs.openSync(file(g2), 'r+')
    fs.writeSync(fd, Buffer.from('XY'), 0, 2, 5 * MiB + 100)
    fs.closeSync(fd)
    const back = runNode(`(async () => {
      const { shm, restore } = lib
      const r = await restore({ stateDir: '${state}' })
      const b = shm.attach(shm.get(0x6300))
      let ok = true
      for (let i = 0; i < b.length; i += 4096) if (b.readUInt32LE(i) !== ((i * 2654435761) >>> 0)) ok = false
      console.log(JSON.stringify({ generation: r.generation, rejected: r.rejected.map((x) => x.generation), ok }))
    })().catch((e) => console.log(JSON.stringify({ error: e.message })))`, { prefix: ['unshare', '--ipc'] })
    if (reason === 'checkpoint') {
      expect(back.json, back.stderr).toMatchObject({ generation: g1, rejected: [g2], ok: true })
    } else {
      expect(back.json.error).toMatch(/no generation verifies/)
    }
  }
})

/** Two generations sharing one 64 MiB data file (the second unchanged), in `state`; the script's code goes on with `gens`. */
const twoLinked = (state: string, key: number) => `
  const { shm, snapshot, silentLogger } = lib
  const fs = require('fs')
  const { keepFallback } = require(${JSON.stringify(path.join(root, 'dist', 'state', 'fallback.js'))})
  const b = shm.attach(shm.get(${key}, { size: 64 * ${MiB}, create: true }))
  for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
  const gens = [(await snapshot({ stateDir: '${state}', reason: 'checkpoint' })).generation, (await snapshot({ stateDir: '${state}', reason: 'checkpoint' })).generation]
  const data = (g) => '${state}/' + g + '/' + fs.readdirSync('${state}/' + g).find((f) => f.endsWith('.data'))
  const lines = []
  const log = { log: (level, event, msg) => lines.push({ level, event, msg }) }
`

test('the fallback copy stops when the stop aborts it: no temporary copy left, the generation stays linked and whole; a later call makes it', () => {
  const state = path.join(dir, 'state')
  const r = inNamespace(`${twoLinked(state, 0x6310)}
    const ac = new AbortController()
    // Abort once the copy has begun (its temporary file exists).
    const watch = setInterval(() => { if (fs.readdirSync('${state}/' + gens[0]).some((f) => f.startsWith('.copy-'))) { ac.abort('SIGTERM'); clearInterval(watch) } }, 1)
    const made = await keepFallback({ stateDir: '${state}', signal: ac.signal, log })
    clearInterval(watch)
    const left = fs.readdirSync('${state}/' + gens[0]).filter((f) => f.startsWith('.copy-'))
    const nlink = fs.statSync(data(gens[0])).nlink
    const ok = (await lib.verify('${state}', 'all')).ok
    const again = await keepFallback({ stateDir: '${state}', log: silentLogger })
    console.log(JSON.stringify({ gens, aborted: ac.signal.aborted, made, left, nlink, ok, again, nlinkAfter: fs.statSync(data(gens[0])).nlink, lines }))
  `)
  expect(r.error).toBeUndefined()
  expect(r.aborted).toBe(true)
  expect(r.made).toBeUndefined()
  expect(r.left).toEqual([])
  expect(r.nlink).toBe(2)
  expect(r.ok).toBe(true)
  expect(r.lines.map((l: { event: string }) => l.event)).toContain('fallback.abandoned')
  expect(r.again).toBe(r.gens[0])
  expect(r.nlinkAfter).toBe(1)
})

test.skipIf(!canUnshare('--mount'))('no room for the fallback copy (a small tmpfs): the linked generation stays as it was, no temporary copy is left, the log says fallback.nospace', () => {
  const state = path.join(dir, 'state')
  fs.mkdirSync(state, { mode: 0o700 })
  const r = runNode(
    `(async () => {
      require('child_process').execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=100m,mode=0700', 'tmpfs', '${state}'])
      ${twoLinked(state, 0x6320)}
      const made = await keepFallback({ stateDir: '${state}', log })
      const left = fs.readdirSync('${state}/' + gens[0]).filter((f) => f.startsWith('.copy-'))
      const nlink = fs.statSync(data(gens[0])).nlink
      const ok = (await lib.verify('${state}', 'all')).ok
      console.log(JSON.stringify({ made, left, nlink, ok, lines }))
    })().catch((e) => console.log(JSON.stringify({ error: e.message })))`,
    { prefix: ['unshare', '--ipc', '--mount'] },
  )
  expect(r.status, r.stderr).toBe(0)
  expect(r.json.error).toBeUndefined()
  expect(r.json.made).toBeUndefined()
  expect(r.json.left).toEqual([])
  expect(r.json.nlink).toBe(2)
  expect(r.json.ok).toBe(true)
  expect(r.json.lines.filter((l: { event: string }) => l.event === 'fallback.nospace')).toHaveLength(1)
})

test('an unchanged re-snapshot reads only the sweep\'s share of a file whose stamp holds; a file written since (mtime) is checked in full and never linked', () => {
  const state = path.join(dir, 'state')
  const size = 8 * MiB
  const snap = (name: string) => `const ${name} = await snapshot({ stateDir: '${state}', keep: 0, chunkSize: ${MiB} })`
  const setup = `
    const { shm, snapshot, verify } = lib
    const id = shm.get(0x6400, { size: ${size}, create: true })
    const b = shm.attach(id)
    for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
    const fs = require('fs')
    const file = (g) => '${state}/' + g + '/00006400-0.data'
    const meta = (g) => JSON.parse(fs.readFileSync('${state}/' + g + '/00006400-0.meta', 'utf8').replace(/^[^\\n]*\\n/, ''))
  `
  const r = inNamespace(`
    ${setup}
    ${snap('first')}
    ${snap('second')}
    // Damage chunk 5 through the file system (its mtime moves): the next
    // share would be chunk 1 only, but the stamp no longer holds.
    process.stdout.write(JSON.stringify({ between: meta(second.generation).file }) + '\\n')
    fs.writeSync(fs.openSync(file(second.generation), 'r+'), Buffer.from('rot'), 0, 3, 5 * ${MiB} + 10)
    ${snap('third')}
    const ok = (await verify('${state}', third.generation)).ok
    console.log(JSON.stringify({ first: meta(first.generation).file, second: second.segments[0], third: third.segments[0], inos: [first, second, third].map((g) => fs.statSync(file(g.generation)).ino), ok }))
  `)
  expect(r.error).toBeUndefined()
  expect(r.first).toMatchObject({ sweep: 0, size })
  expect(r.second).toMatchObject({ unchanged: true, bytesWritten: 0, bytesChecked: MiB })
  expect(r.inos[1]).toBe(r.inos[0])
  // The damaged file is not shared: the third generation wrote the segment again, and it verifies.
  expect(r.third.unchanged).toBeFalsy()
  expect(r.third.bytesChecked).toBeUndefined()
  expect(r.third.bytesWritten).toBe(size)
  expect(r.inos[2]).not.toBe(r.inos[1])
  expect(r.ok).toBe(true)
})

test('the sweep: damage that keeps the file\'s stamp (mtime set back) is found within one round, and the segment written again from memory', () => {
  const state = path.join(dir, 'state')
  // 4 chunks: a share of one chunk per snapshot.
  const r = inNamespace(`
    const { shm, snapshot, verify } = lib
    const fs = require('fs'), { spawnSync } = require('child_process')
    const id = shm.get(0x6500, { size: 4 * ${MiB}, create: true })
    const b = shm.attach(id)
    for (let i = 0; i < b.length; i += 4096) b.writeUInt32LE((i * 2654435761) >>> 0, i)
    const first = await snapshot({ stateDir: '${state}', keep: 0, chunkSize: ${MiB} })
    // Damage below the file system: one byte of chunk 2 flipped, the mtime
    // set back to the nanosecond (the stamp still holds).
    const file = '${state}/' + first.generation + '/00006500-0.data'
    const ns = fs.statSync(file, { bigint: true }).mtimeNs
    const fd = fs.openSync(file, 'r+'), one = Buffer.alloc(1)
    fs.readSync(fd, one, 0, 1, 2 * ${MiB} + 77)
    one[0] ^= 0xff
    fs.writeSync(fd, one, 0, 1, 2 * ${MiB} + 77)
    fs.closeSync(fd)
    const t = spawnSync('touch', ['-m', '-d', '@' + (ns / 1000000000n) + '.' + String(ns % 1000000000n).padStart(9, '0'), file])
    const kept = fs.statSync(file, { bigint: true }).mtimeNs === ns
    const out = []
    for (let n = 0; n < 4; n++) {
      const s = await snapshot({ stateDir: '${state}', keep: 0, chunkSize: ${MiB} })
      out.push({ unchanged: !!s.segments[0].unchanged, bytesWritten: s.segments[0].bytesWritten, ok: (await verify('${state}', s.generation)).ok })
    }
    console.log(JSON.stringify({ touch: t.status, kept, out }))
  `)
  expect(r.error).toBeUndefined()
  expect(r.touch).toBe(0)
  expect(r.kept).toBe(true)
  // Chunks 0 and 1 are checked by the first two (linked), chunk 2 by the third: damage found, written again.
  const found = r.out.findIndex((s: { unchanged: boolean }) => !s.unchanged)
  expect(found).toBe(2)
  expect(r.out[found]).toMatchObject({ bytesWritten: 4 * MiB, ok: true })
  // From then on the fresh file is shared again.
  expect(r.out[3]).toMatchObject({ unchanged: true, ok: true })
})
