/**
 * Bad input in the state dir (issue 4, "Must hold"): flipped bytes, truncated
 * and missing files, forged metadata, garbage in CURRENT, an unknown format
 * version, symbolic links, directories and FIFOs where files should be.
 *
 * For each, as the operator sees it: `shmkeep verify` exits 1 naming the
 * segment and chunk (or the file); `shmkeep restore` in a new namespace never
 * crashes and names the segment or file; with an older good generation it
 * falls back to it, says so, and moves the bad one aside as quarantine-gen-…;
 * without one it exits 1 and leaves no segment behind.
 *
 * The state dir is made once (gen-1 = A, gen-2 = B: every segment changed, so
 * no data file is shared between them) and copied for each case.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { currentOf, flipByte, genName, noCrash, readChecked, realRoot, sorted, Workspace, writeChecked, type SumLine } from './snapkit'

const MiB = 1024 * 1024
const ws = new Workspace()
afterAll(() => ws.cleanup())

const P = ws.state('pristine')
const G1 = genName(1)
const G2 = genName(2)
let A: SumLine[]
let B: SumLine[]

beforeAll(() => {
  if (!realRoot) return
  ws.ns(`
    mkseg 0x8000 100000 0600 pat
    mkseg -u 1000 -g 1000 0x8001 9000000 0640 pat
    mkseg 0 4096 0600 pat
    step g1 shmkeep snapshot -s "$P"
    sums A
    shmpeer write key:0x8000 0 B2; shmpeer write key:0x8001 0 B2; shmpeer write key:0x8001 5000000 B2; shmpeer write 2 0 B2
    mkseg 0x8002 50 0600 pat
    step g2 shmkeep snapshot -s "$P"
    sums B
  `, { env: { P } })
  expect(ws.step('g2').rc, ws.step('g2').err).toBe(0)
  A = ws.sums('A')
  B = ws.sums('B')
  // No data file of gen-2 may be shared with gen-1 (damage to one would be damage to both).
  for (const f of fs.readdirSync(path.join(P, G2))) expect(fs.statSync(path.join(P, G2, f)).nlink, f).toBe(1)
})

const seg = (dir: string, f: string) => path.join(dir, G2, f)
const DATA = '00008001-1.data'
const META = '00008001-1.meta'
const HEADER_LEN = (file: string) => fs.readFileSync(file).indexOf(10) + 1

interface Case {
  name: string
  damage(dir: string): void
  /** What `verify` prints about it (stdout). */
  verify: RegExp
  /** Why restore rejects the generation (stderr). */
  restore: RegExp
}

const cases: Case[] = [
  {
    name: 'a flipped byte in a .data file',
    damage: (d) => flipByte(seg(d, DATA), 5_000_100),
    verify: /segment 0x00008001 \(saved id 1\): chunk\(s\) 1 fail their checksum/,
    restore: /segment 0x00008001 \(saved id 1\): chunk 1 of 00008001-1\.data fails its checksum/,
  },
  {
    name: 'a flipped byte in a .meta header',
    damage: (d) => flipByte(seg(d, META), 3),
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: has no shmkeep header/,
    restore: /00008001-1\.meta: has no shmkeep header/,
  },
  {
    name: 'another CRC in a .meta header',
    damage: (d) => {
      const f = seg(d, META)
      const text = fs.readFileSync(f, 'latin1')
      const at = text.indexOf('crc32c=') + 7
      fs.writeFileSync(f, text.slice(0, at) + (text[at] === '0' ? '1' : '0') + text.slice(at + 1), 'latin1')
    },
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: checksum mismatch/,
    restore: /00008001-1\.meta: checksum mismatch/,
  },
  {
    name: 'a flipped byte in a .meta JSON body',
    damage: (d) => flipByte(seg(d, META), HEADER_LEN(seg(d, META)) + 30),
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: checksum mismatch/,
    restore: /00008001-1\.meta: checksum mismatch/,
  },
  {
    name: 'a truncated .data file',
    damage: (d) => fs.truncateSync(seg(d, DATA), 4 * MiB),
    verify: /segment 0x00008001 \(saved id 1\): 00008001-1\.data: the data file has 4194304 bytes, the chunk table describes 9000000/,
    restore: /segment 0x00008001 \(saved id 1\): .*the data file has 4194304 bytes, the chunk table describes 9000000/,
  },
  {
    name: 'a .meta claiming a huge size (CRC correct)',
    damage: (d) => {
      const m = readChecked(seg(d, META)).value
      writeChecked(seg(d, META), { ...m, size: 2 ** 40 })
    },
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta/,
    restore: /00008001-1\.meta: describes segment 0x00008001/,
  },
  {
    name: 'a missing .meta',
    damage: (d) => fs.rmSync(seg(d, META)),
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: is missing/,
    restore: /00008001-1\.meta: is missing/,
  },
  {
    name: 'a missing .data',
    damage: (d) => fs.rmSync(seg(d, DATA)),
    verify: /segment 0x00008001 \(saved id 1\): 00008001-1\.data: open: No such file or directory/,
    restore: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.data: ENOENT/,
  },
  {
    name: 'a missing GENERATION',
    damage: (d) => fs.rmSync(seg(d, 'GENERATION')),
    verify: /gen-000000000002: DAMAGED \(\S*GENERATION: is missing\)/,
    restore: /gen-000000000002\/GENERATION: is missing/,
  },
  {
    name: 'a GENERATION of format 3 (header rewritten, CRC correct)',
    damage: (d) => writeChecked(seg(d, 'GENERATION'), readChecked(seg(d, 'GENERATION')).value, 3),
    verify: /gen-000000000002: DAMAGED \(\S*GENERATION: is format 3; this shmkeep reads format 1 and 2 only/,
    restore: /GENERATION: is format 3; this shmkeep reads format 1 and 2 only/,
  },
  {
    name: 'a .meta of format 3',
    damage: (d) => writeChecked(seg(d, META), { ...readChecked(seg(d, META)).value, format: 3 }, 3),
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: is format 3/,
    restore: /00008001-1\.meta: is format 3/,
  },
  {
    name: 'a symbolic link as .data (to an intact copy)',
    damage: (d) => {
      fs.renameSync(seg(d, DATA), path.join(d, 'elsewhere.data'))
      fs.symlinkSync(path.join(d, 'elsewhere.data'), seg(d, DATA))
    },
    verify: /segment 0x00008001 \(saved id 1\): 00008001-1\.data: open: Too many levels of symbolic links/,
    restore: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.data: ELOOP/,
  },
  {
    name: 'a symbolic link as .meta (to an intact copy)',
    damage: (d) => {
      fs.renameSync(seg(d, META), path.join(d, 'elsewhere.meta'))
      fs.symlinkSync(path.join(d, 'elsewhere.meta'), seg(d, META))
    },
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: is a symbolic link/,
    restore: /00008001-1\.meta: is a symbolic link; shmkeep never follows links/,
  },
  {
    name: 'a symbolic link as GENERATION (to an intact copy)',
    damage: (d) => {
      fs.renameSync(seg(d, 'GENERATION'), path.join(d, 'elsewhere.gen'))
      fs.symlinkSync(path.join(d, 'elsewhere.gen'), seg(d, 'GENERATION'))
    },
    verify: /gen-000000000002: DAMAGED \(\S*GENERATION: is a symbolic link/,
    restore: /GENERATION: is a symbolic link/,
  },
  {
    name: 'a directory as .data',
    damage: (d) => {
      fs.rmSync(seg(d, DATA))
      fs.mkdirSync(seg(d, DATA))
    },
    verify: /segment 0x00008001 \(saved id 1\): 00008001-1\.data: /,
    restore: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.data: /,
  },
  {
    name: 'a directory as .meta',
    damage: (d) => {
      fs.rmSync(seg(d, META))
      fs.mkdirSync(seg(d, META))
    },
    verify: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.meta: is not a regular file/,
    restore: /00008001-1\.meta: is not a regular file/,
  },
  {
    name: 'a directory as GENERATION',
    damage: (d) => {
      fs.rmSync(seg(d, 'GENERATION'))
      fs.mkdirSync(seg(d, 'GENERATION'))
    },
    verify: /gen-000000000002: DAMAGED \(\S*GENERATION: is not a regular file\)/,
    restore: /GENERATION: is not a regular file/,
  },
  {
    name: 'a FIFO as .data (nothing may hang)',
    damage: (d) => {
      fs.rmSync(seg(d, DATA))
      if (ws.ns(`mkfifo "${seg(d, DATA)}"`).status !== 0) throw new Error('mkfifo failed')
    },
    verify: /segment 0x00008001 \(saved id 1\): 00008001-1\.data: /,
    restore: /segment 0x00008001 \(saved id 1\): \S*00008001-1\.data: /,
  },
  {
    name: 'a GENERATION listing a .meta outside its directory (CRC correct)',
    damage: (d) => {
      const g = readChecked(seg(d, 'GENERATION')).value
      g.segments[1].meta = `../${G1}/00008001-1.meta`
      writeChecked(seg(d, 'GENERATION'), g)
    },
    verify: /segment 0x00008001 \(saved id 1\): \.\.\/gen-000000000001\/00008001-1\.meta: is not a segment file name shmkeep writes/,
    restore: /\.\.\/gen-000000000001\/00008001-1\.meta: is not a segment file name shmkeep writes/,
  },
]

/** Copies of the pristine state dir: with gen-1 ("fb": a fallback exists) and without ("only"). */
function prepare(tag: string, damage: (dir: string) => void, { only: withOnly = true } = {}): { fb: string; only: string } {
  const fb = path.join(ws.dir, 'cases', `${tag}-fb`)
  const only = path.join(ws.dir, 'cases', `${tag}-only`)
  fs.mkdirSync(path.dirname(fb), { recursive: true })
  fs.cpSync(P, fb, { recursive: true })
  damage(fb)
  if (withOnly) {
    fs.cpSync(P, only, { recursive: true })
    fs.rmSync(path.join(only, G1), { recursive: true })
    damage(only)
  }
  return { fb, only }
}

/** verify, then restore in a new namespace (what it holds), for each dir. */
function exercise(dirs: Record<string, string>): void {
  ws.ns(
    Object.entries(dirs)
      .map(
        ([tag, dir]) => `
step v_${tag} shmkeep verify -s "${dir}"
inns 'step r_${tag} shmkeep restore -s "${dir}" --json; shmdump r_${tag}; sums r_${tag}'`,
      )
      .join('\n'),
  )
}

describe.skipIf(!realRoot)('damaged generations', () => {
  let dirs: Record<string, { fb: string; only: string }>
  beforeAll(() => {
    dirs = {}
    cases.forEach((c, i) => (dirs[`c${i}`] = prepare(`c${i}`, c.damage)))
    const all: Record<string, string> = {}
    for (const [tag, d] of Object.entries(dirs)) {
      all[`${tag}fb`] = d.fb
      all[`${tag}only`] = d.only
    }
    exercise(all)
  }, 180_000)

  cases.forEach((c, i) => {
    test(`${c.name}: verify names it; restore falls back to the older generation and quarantines the bad one, or fails cleanly without one`, () => {
      const { fb, only } = dirs[`c${i}`]!
      // verify (of CURRENT = gen-2): exit 1, naming the segment and chunk, or the file.
      const v = ws.step(`v_c${i}fb`)
      noCrash(v)
      expect(v.rc, v.out + v.err).toBe(1)
      expect(v.out).toMatch(c.verify)

      // With gen-1 to fall back to: exit 0, says so, holds A, bad generation moved aside.
      const r = ws.step(`r_c${i}fb`)
      noCrash(r)
      expect(r.rc, r.err).toBe(0)
      expect(r.err).toMatch(/generation gen-000000000002 cannot be restored: /)
      expect(r.err).toMatch(c.restore)
      expect(r.err).toMatch(/aside as quarantine-gen-000000000002/)
      expect(r.err).toMatch(/restored gen-000000000001 instead; CURRENT now names it/)
      expect(r.json.generation).toBe(G1)
      expect(r.json.rejected).toMatchObject([{ generation: G2, quarantinedAs: `quarantine-${G2}` }])
      expect(sorted(ws.sums(`r_c${i}fb`))).toEqual(sorted(A))
      expect(currentOf(fb)).toBe(`${G1}\n`)
      expect(fs.existsSync(path.join(fb, `quarantine-${G2}`))).toBe(true)
      expect(fs.existsSync(path.join(fb, G2))).toBe(false)

      // Without: exit 1, naming it, and not one segment left in the namespace.
      const o = ws.step(`r_c${i}only`)
      noCrash(o)
      expect(o.rc, o.err).toBe(1)
      expect(o.err).toMatch(c.restore)
      expect(o.json.error).toMatch(/restore failed, nothing restored/)
      expect(ws.shm(`r_c${i}only`)).toEqual([])
      // The bad generation is kept (in place or moved aside), never deleted.
      expect(fs.existsSync(path.join(only, G2)) || fs.existsSync(path.join(only, `quarantine-${G2}`))).toBe(true)
    })
  })

  test('verify --all and --json name the bad segment and chunk; the good generation verifies', () => {
    const { fb } = prepare('json', cases[0]!.damage, { only: false })
    ws.ns(`
      step all shmkeep verify -s "${fb}" --all
      step json shmkeep verify -s "${fb}" --json
      step gens shmkeep generations -s "${fb}" --verify
    `)
    const all = ws.step('all')
    expect(all.rc).toBe(1)
    expect(all.out).toMatch(/gen-000000000001: ok\ngen-000000000002: DAMAGED\n {2}segment 0x00008001 \(saved id 1\): chunk\(s\) 1 fail their checksum/)
    const json = ws.step('json')
    expect(json.rc).toBe(1)
    expect(json.json).toMatchObject({ schema: 'shmkeep.verify', ok: false })
    const bad = json.json.generations[0].segments.find((s: any) => !s.ok)
    expect(bad).toMatchObject({ key: '0x00008001', id: 1, badChunks: [1] })
    expect(json.json.generations[0].segments.filter((s: any) => s.ok)).toHaveLength(3)
    expect(ws.step('gens').rc).toBe(1)
    expect(ws.step('gens').out).toMatch(/gen-000000000002 .*DAMAGED/)
  })

  test('restore --partial restores the good segments of a damaged generation and exits 3', () => {
    const { only } = prepare('partial', cases[0]!.damage)
    ws.ns(`inns 'step p shmkeep restore -s "${only}" --partial --json; sums p'`)
    const p = ws.step('p')
    expect(p.rc, p.err).toBe(3)
    expect(p.err).toMatch(/segment 0x00008001 .*chunk 1 of 00008001-1\.data fails its checksum/)
    const status = Object.fromEntries(p.json.segments.map((s: any) => [s.key === '0x00000000' ? `0/${s.savedId}` : s.key, s.status]))
    expect(status).toEqual({ '0x00008000': 'restored', '0x00008001': 'failed', '0/2': 'restored', '0x00008002': 'restored' })
    const expected = B.filter((s) => s.key !== '0x00008001')
    expect(sorted(ws.sums('p'))).toEqual(sorted(expected))
  })
})

describe.skipIf(!realRoot)('CURRENT', () => {
  test('garbage in CURRENT: restore says so and falls back to the newest generation that verifies; verify names CURRENT', () => {
    const { fb } = prepare('garbage', (d) => fs.writeFileSync(path.join(d, 'CURRENT'), 'gen-00000\u0000\u00ff garbage\n'), { only: false })
    ws.ns(`
      step v shmkeep verify -s "${fb}"
      step g shmkeep generations -s "${fb}"
      inns 'step r shmkeep restore -s "${fb}" --json; sums r'
    `)
    const v = ws.step('v')
    noCrash(v)
    expect(v.rc).toBe(1)
    expect(v.err).toMatch(/CURRENT: does not name a generation/)
    expect(ws.step('g').rc).toBe(0)
    const r = ws.step('r')
    noCrash(r)
    expect(r.rc, r.err).toBe(0)
    expect(r.err).toMatch(/CURRENT: does not name a generation .*falling back to the newest generation that verifies/)
    expect(r.json.generation).toBe(G2)
    expect(sorted(ws.sums('r'))).toEqual(sorted(B))
  })

  test('a symbolic link as CURRENT is not followed: restore says so and falls back to the newest generation', () => {
    const { fb } = prepare('curlink', (d) => {
      fs.writeFileSync(path.join(d, 'elsewhere'), `${G1}\n`)
      fs.rmSync(path.join(d, 'CURRENT'))
      fs.symlinkSync(path.join(d, 'elsewhere'), path.join(d, 'CURRENT'))
    }, { only: false })
    ws.ns(`inns 'step r shmkeep restore -s "${fb}" --json; sums r'`)
    const r = ws.step('r')
    expect(r.rc, r.err).toBe(0)
    expect(r.err).toMatch(/CURRENT: is a symbolic link; shmkeep never follows links/)
    expect(r.json.generation).toBe(G2)
    expect(sorted(ws.sums('r'))).toEqual(sorted(B))
  })

  test('after a restore that fell back from a garbage CURRENT, the next snapshot switches CURRENT (exit 0) and the next restore gets it', () => {
    const { fb } = prepare('garbage-next', (d) => fs.writeFileSync(path.join(d, 'CURRENT'), 'garbage\n'), { only: false })
    ws.ns(`
      step r shmkeep restore -s "${fb}"
      shmpeer write key:0x8000 0 NEWER
      step s shmkeep snapshot -s "${fb}"
      sums saved
      inns 'step r2 shmkeep restore -s "${fb}"; sums r2'
    `)
    expect(ws.step('r').rc).toBe(0)
    expect(ws.step('s').rc, ws.step('s').err).toBe(0)
    expect(fs.readFileSync(path.join(fb, 'CURRENT'), 'utf8')).toMatch(/^gen-\d{12}\n$/)
    expect(sorted(ws.sums('r2'))).toEqual(sorted(ws.sums('saved')))
  })

  test('CURRENT naming a generation that is missing: restore falls back to the newest one there is', () => {
    const { fb } = prepare('missing-gen', (d) => fs.writeFileSync(path.join(d, 'CURRENT'), `${genName(99)}\n`), { only: false })
    ws.ns(`inns 'step r shmkeep restore -s "${fb}" --json; sums r'`)
    const r = ws.step('r')
    noCrash(r)
    expect(r.rc, r.err).toBe(0)
    expect(sorted(ws.sums('r'))).toEqual(sorted(B))
  })
})

describe.skipIf(!realRoot)('forged metadata', () => {
  test('a .meta whose data file lies outside its generation (CRC correct) is refused by restore as by verify', () => {
    const { fb } = prepare('data-escape', (d) => {
      // gen-2's 0x8001 pointed at gen-1's bytes, with gen-1's chunk table: a consistent forgery.
      const m1 = readChecked(path.join(d, G1, META)).value
      const m2 = readChecked(seg(d, META)).value
      writeChecked(seg(d, META), { ...m2, chunks: m1.chunks, hashes: m1.hashes, data: `../${G1}/${DATA}` })
    }, { only: false })
    ws.ns(`
      step v shmkeep verify -s "${fb}"
      inns 'step r shmkeep restore -s "${fb}" --json; sums r'
    `)
    expect(ws.step('v').rc).toBe(1)
    expect(ws.step('v').out).toMatch(/is not a segment file name shmkeep writes|names the data file "\.\.\/gen-000000000001/)
    const r = ws.step('r')
    expect(r.err).toMatch(/is not a segment file name shmkeep writes|names the data file "\.\.\/gen-000000000001/)
    expect(r.json.generation).toBe(G1)
  })

  test('a .meta and GENERATION consistently claiming 1 TiB: a clear error naming the segment, the namespace as it was', () => {
    const { only } = prepare('huge', (d) => {
      const m = readChecked(seg(d, META)).value
      writeChecked(seg(d, META), { ...m, size: 2 ** 40 })
      const g = readChecked(seg(d, 'GENERATION')).value
      g.segments.find((e: any) => e.key === '0x00008001').size = 2 ** 40
      writeChecked(seg(d, 'GENERATION'), g)
    })
    ws.ns(`inns 'step r shmkeep restore -s "${only}"; shmdump r; cat /proc/sys/kernel/shm_next_id >"$W/next-id"'`)
    const r = ws.step('r')
    noCrash(r)
    expect(r.rc).toBe(1)
    expect(ws.shm('r')).toEqual([])
    expect(r.err).toMatch(/0x00008001/)
    expect(r.err).not.toMatch(/invalid argument, write/)
    expect(ws.read('next-id')!.trim()).toBe('-1')
  })

  test('a .data file damaged after it was saved is not carried into the next generation of an unchanged segment', () => {
    const S = ws.state('rot')
    ws.ns(`
      mkseg 0x8100 100000 0600 pat
      mkseg 0x8101 100 0600 pat
      step s1 shmkeep snapshot -s "$S"
      printf '\\377' | dd of="$S/${G1}/00008100-0.data" bs=1 seek=5 conv=notrunc 2>/dev/null
      shmpeer write key:0x8101 0 changed
      step s2 shmkeep snapshot -s "$S"
      sums live
      inns 'step r shmkeep restore -s "$S"; sums r'
    `, { env: { S } })
    expect(ws.step('s2').rc).toBe(0)
    const r = ws.step('r')
    expect(r.rc, r.err).toBe(0)
    expect(sorted(ws.sums('r'))).toEqual(sorted(ws.sums('live')))
  })
})
