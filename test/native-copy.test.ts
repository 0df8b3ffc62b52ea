/**
 * The addon's copy half (native/copy.cc, native/crc32c.cc) called directly:
 * CRC-32C, and saveSegment / restoreSegment / verifyFile on real segments.
 *
 * Segments are made with IPC_PRIVATE, so no key is shared with other files;
 * every one is removed in afterEach. Run with `npm test` (a private IPC
 * namespace), or alone: `unshare --ipc npx vitest run test/native-copy.test.ts`.
 */
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
const native = require('node-gyp-build')(root)
/** The .node file itself, for child processes. */
const addonPath: string = require('node-gyp-build').resolve(root)

/** Tests that switch to uid 1000 need real root (not `unshare -U -r`, where only uid 0 is mapped). */
const realRoot = process.getuid!() === 0 && process.env.SHMKEEP_TEST_NS !== 'user+ipc'

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000, env })
  return { status: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : '') }
}
const haveSetpriv = run('sh', ['-c', 'command -v setpriv']).status === 0

const IPC_CREAT_0600 = 0o1600
const MiB = 1 << 20
const PAGE = 4096

let dir: string
const segments: number[] = []
const attachments: { handle: unknown; buffer: Buffer }[] = []

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-copy-'))
})
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true })
})
afterEach(() => {
  for (const a of attachments.splice(0)) native.shmDetach(a.handle, a.buffer)
  for (const id of segments.splice(0)) {
    try {
      native.shmRemove(id, -1, -1)
    } catch {
      // already gone
    }
  }
})

function create(size: number, uid = -1, gid = -1): number {
  const id = native.shmGet(0, size, IPC_CREAT_0600, uid, gid)
  segments.push(id)
  return id
}

function attach(id: number, readonly = false): Buffer {
  const a = native.shmAttach(id, readonly, 0, -1, -1, -1, 2 ** 32)
  attachments.push(a)
  return a.buffer
}

let fileCounter = 0
function file(name = 'seg'): string {
  return path.join(dir, `${name}-${process.pid}-${fileCounter++}.dat`)
}

async function save(id: number, p: string | null, chunkSize: number, skipAbsent = true) {
  return native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize, skipAbsent, fsync: false })
}

async function restore(id: number, p: string, size: number, chunkSize: number, chunks: Buffer, stopAtFirstBad = false) {
  return native.restoreSegment({ id, uid: -1, gid: -1, path: p, size, chunkSize, chunks, stopAtFirstBad })
}

function entries(table: Buffer): { crc: number; type: number }[] {
  const out = []
  for (let i = 0; i < table.length; i += 8) {
    expect(table.readUIntLE(i + 5, 3)).toBe(0)
    out.push({ crc: table.readUInt32LE(i), type: table[i + 4] })
  }
  return out
}

// Straightforward bitwise CRC-32C, to check the fast paths against.
function crcRef(buf: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0
  for (const b of buf) {
    c ^= b
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
  }
  return ~c >>> 0
}

function shmRss(id: number): number {
  const lines = fs.readFileSync('/proc/sysvipc/shm', 'utf8').trim().split('\n').slice(1)
  for (const line of lines) {
    const f = line.trim().split(/\s+/)
    if (Number(f[1]) === id) return Number(f[14])
  }
  throw new Error(`segment ${id} not in /proc/sysvipc/shm`)
}

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p
  } catch (e) {
    return e
  }
  throw new Error('expected a rejection')
}

describe('crc32c', () => {
  it('matches the known vectors', () => {
    expect(native.crc32c(Buffer.from('123456789'))).toBe(0xe3069283)
    expect(native.crc32c(new Uint8Array(32))).toBe(0x8a9136aa)
    expect(native.crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43)
    expect(native.crc32c(new Uint8Array(0))).toBe(0)
    expect(['sse4.2', 'armv8-crc', 'table']).toContain(native.crc32cImpl())
  })

  it('appends with a seed and honours the view of a Uint8Array', () => {
    const all = randomBytes(100_003)
    for (const cut of [0, 1, 7, 8, 4096, 50_000, 100_003]) {
      const a = all.subarray(0, cut)
      const b = all.subarray(cut)
      expect(native.crc32c(b, native.crc32c(a))).toBe(native.crc32c(all))
    }
    const view = new Uint8Array(all.buffer, all.byteOffset + 3, 1000)
    expect(native.crc32c(view)).toBe(crcRef(view))
  })

  it('agrees with a bitwise reference on odd lengths and alignments', () => {
    const data = randomBytes(30_000)
    for (const len of [1, 3, 7, 9, 255, 257, 767, 769, 24_577, 29_991]) {
      for (const off of [0, 1, 5]) {
        const v = data.subarray(off, off + len)
        expect(native.crc32c(v)).toBe(crcRef(v))
      }
    }
  })

  it('gives the same results with SHMKEEP_CRC32C=table', () => {
    const data = randomBytes(3 * MiB + 11)
    const dataFile = path.join(dir, 'crc-input.bin')
    fs.writeFileSync(dataFile, data)
    const cases: [number, number][] = []
    for (const len of [1, 13, 1021, 8191, 24_581, 65_537, 1_000_003, 3 * MiB + 5]) {
      for (const off of [0, 1, 3, 6]) cases.push([off, len])
    }
    const script = `
      const native = require(${JSON.stringify(addonPath)});
      const data = require('fs').readFileSync(${JSON.stringify(dataFile)});
      const cases = ${JSON.stringify(cases)};
      console.log(JSON.stringify({
        impl: native.crc32cImpl(),
        crcs: cases.map(([o, l]) => native.crc32c(data.subarray(o, o + l))),
      }));`
    const child = run(process.execPath, ['-e', script], { ...process.env, SHMKEEP_CRC32C: 'table' })
    expect(child.stderr).toBe('')
    const out = JSON.parse(child.stdout)
    expect(out.impl).toBe('table')
    expect(out.crcs).toEqual(cases.map(([o, l]) => native.crc32c(data.subarray(o, o + l))))
  })
})

describe('saveSegment / restoreSegment / verifyFile', () => {
  async function roundTrip(size: number, chunkSize: number, fill: (b: Buffer) => void) {
    const id = create(size)
    const src = attach(id)
    fill(src)
    const p = file()
    const saved = await save(id, p, chunkSize)
    expect(fs.statSync(p).size).toBe(size)
    expect(saved.stat.size).toBe(size)
    expect(saved.stat.id).toBe(id)
    expect(saved.kernelPageSize).toBe(PAGE)
    const nChunks = Math.ceil(size / chunkSize)
    expect(saved.chunks.length).toBe(nChunks * 8)
    expect(saved.dataChunks + saved.zeroChunks).toBe(nChunks)
    const table = entries(saved.chunks)
    let dataBytes = 0
    table.forEach((e, i) => {
      const chunk = src.subarray(i * chunkSize, Math.min(size, (i + 1) * chunkSize))
      expect(e.crc).toBe(native.crc32c(chunk))
      expect(e.type).toBe(chunk.every((b) => b === 0) ? 0 : 1)
      if (e.type === 1) dataBytes += chunk.length
    })
    expect(saved.bytesWritten).toBe(dataBytes)
    expect(fs.readFileSync(p).equals(src)).toBe(true)

    const verified = await native.verifyFile({ path: p, size, chunkSize, chunks: saved.chunks })
    expect(verified.badChunks).toEqual([])

    const id2 = create(size)
    const restored = await restore(id2, p, size, chunkSize, saved.chunks)
    expect(restored).toEqual({ badChunks: [], bytesRead: dataBytes, mapFiles: false })
    expect(attach(id2, true).equals(src)).toBe(true)
    return { id, p, saved, src }
  }

  it('round-trips a 1-byte segment', async () => {
    await roundTrip(1, 4 * MiB, (b) => {
      b[0] = 0xa5
    })
  })

  it('round-trips an all-zero 1-byte segment as a hole', async () => {
    const { p, saved } = await roundTrip(1, 4 * MiB, () => {})
    expect(saved.zeroChunks).toBe(1)
    expect(fs.statSync(p).blocks).toBe(0)
  })

  it('round-trips 4097 bytes with a partial last chunk', async () => {
    await roundTrip(4097, 4096, (b) => {
      randomBytes(4097).copy(b)
    })
    await roundTrip(4097, 4096, (b) => {
      b[4096] = 1 // first chunk zero, last (1 byte) data
    })
  })

  it('round-trips 9 MiB in chunks of 4 MiB, a zero chunk in the middle', async () => {
    const { saved } = await roundTrip(9 * MiB, 4 * MiB, (b) => {
      randomBytes(4 * MiB).copy(b, 0)
      randomBytes(MiB).copy(b, 8 * MiB)
    })
    expect(entries(saved.chunks).map((e) => e.type)).toEqual([1, 0, 1])
  })

  it('checksum-only mode (path null) gives the table of a save', async () => {
    const size = 9 * MiB + 123
    const id = create(size)
    const b = attach(id)
    randomBytes(2 * MiB).copy(b, 3 * MiB)
    b[size - 1] = 9
    const saved = await save(id, file(), 2 * MiB)
    for (const p of [null, undefined]) {
      const checked = await save(id, p as null, 2 * MiB)
      expect(checked.chunks.equals(saved.chunks)).toBe(true)
      expect(checked.dataChunks).toBe(saved.dataChunks)
    }
    // Without skipAbsent the table is the same (the zero chunks are just read).
    const full = await save(id, null, 2 * MiB, false)
    expect(full.chunks.equals(saved.chunks)).toBe(true)
  })

  it('keeps a sparse 64 MiB segment sparse: file, table and restored segment', async () => {
    const size = 64 * MiB
    const chunkSize = 4 * MiB
    const id = create(size)
    const b = attach(id)
    const touched = [5 * PAGE + 17, 21 * MiB + 3, 50 * MiB]
    for (const off of touched) b[off] = 0x5a
    const p = file('sparse')
    const saved = await save(id, p, chunkSize)
    const dataIdx = [...new Set(touched.map((o) => Math.floor(o / chunkSize)))]
    const types = entries(saved.chunks).map((e) => e.type)
    expect(types.flatMap((t, i) => (t === 1 ? [i] : []))).toEqual(dataIdx)
    expect(saved.zeroChunks).toBe(size / chunkSize - dataIdx.length)
    expect(saved.absentChunks).toBe(size / chunkSize - dataIdx.length)
    // Holes are page-granular: only the touched pages are read and written.
    expect(saved.bytesWritten).toBe(touched.length * PAGE)
    expect(fs.statSync(p).blocks * 512).toBeLessThanOrEqual(touched.length * PAGE + 64 * 1024)
    // Untouched pages were not read: the source segment did not fill up.
    expect(shmRss(id)).toBe(touched.length * PAGE)

    // Restored into the attachment, and through map_files (where it opens): the holes stay holes.
    for (const mapFiles of native.mapFilesOpens() ? [false, true] : [false]) {
      const id2 = create(size)
      const r = await native.restoreSegment({ id: id2, uid: -1, gid: -1, path: p, size, chunkSize, chunks: saved.chunks, stopAtFirstBad: false, mapFiles })
      expect([r.badChunks, r.mapFiles]).toEqual([[], mapFiles])
      expect([mapFiles, shmRss(id2)]).toEqual([mapFiles, touched.length * PAGE])
      expect(attach(id2, true).equals(b)).toBe(true)
    }
  })

  // Needs free huge pages (e.g. sysctl vm.nr_hugepages=8); skipped otherwise.
  const meminfo = fs.readFileSync('/proc/meminfo', 'utf8')
  const hugeFree = Number(/HugePages_Free:\s+(\d+)/.exec(meminfo)?.[1] ?? 0)
  const hugeSize = Number(/Hugepagesize:\s+(\d+) kB/.exec(meminfo)?.[1] ?? 0) * 1024
  it.skipIf(hugeFree < 6)('reads every chunk of a hugetlb segment (mincore cannot see its pages)', async () => {
    const size = 3 * hugeSize
    const flags = IPC_CREAT_0600 | native.shmConstants.SHM_HUGETLB
    const id = native.shmGet(0, size, flags, -1, -1)
    segments.push(id)
    const b = attach(id)
    b[100] = 1
    b[2 * hugeSize + 5] = 2
    const p = file('huge')
    const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize: hugeSize, skipAbsent: true, fsync: false })
    expect(saved.kernelPageSize).toBe(hugeSize)
    expect(saved.absentChunks).toBe(0)
    expect(entries(saved.chunks).map((e) => e.type)).toEqual([1, 0, 1])
    const id2 = native.shmGet(0, size, flags, -1, -1)
    segments.push(id2)
    expect((await restore(id2, p, size, hugeSize, saved.chunks)).badChunks).toEqual([])
    expect(attach(id2, true).equals(b)).toBe(true)
  })

  it('names the chunk of a flipped byte, in restore and verify', async () => {
    const size = 9 * MiB
    const chunkSize = 4 * MiB
    const id = create(size)
    const b = attach(id)
    randomBytes(size).copy(b)
    const p = file()
    const saved = await save(id, p, chunkSize)
    const fd = fs.openSync(p, 'r+')
    const one = Buffer.alloc(1)
    fs.readSync(fd, one, 0, 1, 5 * MiB + 7)
    one[0] ^= 0x10
    fs.writeSync(fd, one, 0, 1, 5 * MiB + 7)
    fs.closeSync(fd)

    expect((await native.verifyFile({ path: p, size, chunkSize, chunks: saved.chunks })).badChunks).toEqual([1])
    const id2 = create(size)
    expect((await restore(id2, p, size, chunkSize, saved.chunks)).badChunks).toEqual([1])
    // stopAtFirstBad stops there: chunk 2 is not read.
    const id3 = create(size)
    const r = await restore(id3, p, size, chunkSize, saved.chunks, true)
    expect(r).toEqual({ badChunks: [1], bytesRead: 8 * MiB, mapFiles: false })
  })

  it('verifyFile finds data in a ZERO chunk, and a ZERO entry with a wrong CRC', async () => {
    const size = 3 * 65536
    const chunkSize = 65536
    const id = create(size)
    const b = attach(id)
    b[10] = 1 // chunks 1 and 2 stay zero
    const p = file()
    const saved = await save(id, p, chunkSize)
    expect(entries(saved.chunks).map((e) => e.type)).toEqual([1, 0, 0])
    const check = (chunks: Buffer) => native.verifyFile({ path: p, size, chunkSize, chunks })

    // Zero bytes written into a hole are data on disk, but still zero: fine.
    const fd = fs.openSync(p, 'r+')
    fs.writeSync(fd, Buffer.alloc(100), 0, 100, 2 * chunkSize + 1000)
    expect((await check(saved.chunks)).badChunks).toEqual([])
    fs.writeSync(fd, Buffer.from([7]), 0, 1, 2 * chunkSize + 1050)
    fs.closeSync(fd)
    expect((await check(saved.chunks)).badChunks).toEqual([2])

    const wrong = Buffer.from(saved.chunks)
    wrong.writeUInt32LE(wrong.readUInt32LE(8) ^ 1, 8)
    expect((await check(wrong)).badChunks).toEqual([1, 2])
    // restore trusts ZERO chunks' memory (a fresh segment), but not a bad entry.
    const id2 = create(size)
    expect((await restore(id2, p, size, chunkSize, wrong)).badChunks).toEqual([1])
  })

  it('verifyFile handles chunks larger than its buffer, reading only the data runs', async () => {
    const size = 20 * MiB + 5
    const chunkSize = 16 * MiB
    const id = create(size)
    const b = attach(id)
    randomBytes(MiB).copy(b, 15 * MiB)
    b[size - 1] = 3
    const p = file()
    const saved = await save(id, p, chunkSize)
    expect(entries(saved.chunks).map((e) => e.type)).toEqual([1, 1])
    const r = await native.verifyFile({ path: p, size, chunkSize, chunks: saved.chunks })
    // the holes (never-touched pages) are not read: 1 MiB and the last 5 bytes
    expect(r).toEqual({ badChunks: [], bytesRead: MiB + 5 })
  })

  describe('errors', () => {
    const size = 3 * PAGE
    const chunkSize = PAGE
    let id: number
    let p: string
    let chunks: Buffer

    async function setup() {
      id = create(size)
      attach(id).fill(0x11, 0, PAGE + 1)
      p = file()
      chunks = (await save(id, p, chunkSize)).chunks
    }

    it('a truncated file is ESIZE', async () => {
      await setup()
      fs.truncateSync(p, size - 1)
      for (const e of [
        await rejection(restore(create(size), p, size, chunkSize, chunks)),
        await rejection(native.verifyFile({ path: p, size, chunkSize, chunks })),
      ]) {
        expect(e.code).toBe('ESIZE')
        expect(e.fileSize).toBe(size - 1)
        expect(e.message).toContain(String(size - 1))
        expect(e.message).toContain(String(size))
      }
    })

    it('a missing file is ENOENT, a symlink ELOOP, a directory EINVAL', async () => {
      await setup()
      const link = `${p}.link`
      fs.symlinkSync(p, link)
      const cases: [string, number, string][] = [
        [`${p}.missing`, os.constants.errno.ENOENT, 'open'],
        [link, os.constants.errno.ELOOP, 'open'],
        [dir, os.constants.errno.EINVAL, 'fstat'],
      ]
      for (const [target, errno, syscall] of cases) {
        for (const e of [
          await rejection(restore(create(size), target, size, chunkSize, chunks)),
          await rejection(native.verifyFile({ path: target, size, chunkSize, chunks })),
        ]) {
          expect(e.errno).toBe(errno)
          expect(e.syscall).toBe(syscall)
        }
      }
    })

    it('saving onto an existing path or a symlink is EEXIST', async () => {
      await setup()
      const link = `${p}.link2`
      fs.symlinkSync(`${p}.nowhere`, link)
      for (const target of [p, link]) {
        const e = await rejection(save(id, target, chunkSize))
        expect(e.errno).toBe(os.constants.errno.EEXIST)
        expect(e.syscall).toBe('open')
      }
      expect(fs.existsSync(`${p}.nowhere`)).toBe(false)
    })

    it('a table of the wrong length or with an unknown type is ETABLE', async () => {
      await setup()
      for (const bad of [chunks.subarray(0, 16), Buffer.concat([chunks, Buffer.alloc(8)]), Buffer.alloc(0)]) {
        expect((await rejection(restore(create(size), p, size, chunkSize, bad))).code).toBe('ETABLE')
        expect((await rejection(native.verifyFile({ path: p, size, chunkSize, chunks: bad }))).code).toBe('ETABLE')
      }
      const typed = Buffer.from(chunks)
      typed[8 + 4] = 2
      expect((await rejection(native.verifyFile({ path: p, size, chunkSize, chunks: typed }))).code).toBe('ETABLE')
    })

    it('a segment smaller than the snapshot is ESEGSIZE, a removed one EINVAL', async () => {
      await setup()
      const e = await rejection(restore(create(size - PAGE), p, size, chunkSize, chunks))
      expect(e.code).toBe('ESEGSIZE')
      expect(e.segmentSize).toBe(size - PAGE)
      const gone = create(size)
      native.shmRemove(gone, -1, -1)
      const e2 = await rejection(save(gone, null, chunkSize))
      expect(e2.errno).toBe(os.constants.errno.EINVAL)
      expect(e2.syscall).toBe('shmctl')
    })
  })

  it.skipIf(!realRoot || !haveSetpriv)('saves as another uid when CAP_IPC_OWNER is gone', async () => {
    const size = 2 * PAGE + 1
    const id = create(size, 1000, 1000)
    const b = attach(id)
    randomBytes(size).copy(b)
    const st = native.shmStat(id)
    expect([st.uid, st.cuid, st.mode & 0o777]).toEqual([1000, 1000, 0o600])
    const out = file('uid')
    const script = `
      const native = require(${JSON.stringify(addonPath)});
      const opts = (uid, path) => ({ id: ${id}, uid, gid: uid, path, chunkSize: 4096, skipAbsent: true, fsync: true });
      (async () => {
        const result = {};
        try { await native.saveSegment(opts(-1, null)); result.asRoot = 'ok'; }
        catch (e) { result.asRoot = { errno: e.errno, syscall: e.syscall }; }
        const saved = await native.saveSegment(opts(1000, ${JSON.stringify(out)}));
        result.asOwner = { uid: saved.stat.uid, chunks: saved.chunks.toString('hex') };
        result.euid = process.geteuid();
        console.log(JSON.stringify(result));
      })().catch((e) => { console.error(e); process.exit(1); });`
    // Root as in a container: every capability but CAP_IPC_OWNER (and the
    // other admin ones), so a 0600 segment of uid 1000 is closed to it.
    const child = run('setpriv', [
      '--bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap',
      '--inh-caps=-all',
      process.execPath,
      '-e',
      script,
    ])
    expect(child.stderr).toBe('')
    const r = JSON.parse(child.stdout)
    expect(r.asRoot).toEqual({ errno: os.constants.errno.EACCES, syscall: 'shmctl' })
    expect(r.asOwner.uid).toBe(1000)
    expect(r.euid).toBe(0) // the identity came back
    expect(fs.readFileSync(out).equals(b)).toBe(true)
    expect(fs.statSync(out).uid).toBe(0)
    const again = await save(id, null, 4096)
    expect(r.asOwner.chunks).toBe(again.chunks.toString('hex'))
  })

  it('keeps its own resident set bounded (MADV_DONTNEED after each chunk)', async () => {
    const size = 96 * MiB
    const chunkSize = 2 * MiB
    const id = create(size)
    const w = native.shmAttach(id, false, 0, -1, -1, -1, 2 ** 32)
    w.buffer.fill(0x77)
    native.shmDetach(w.handle, w.buffer)
    const peak = () => {
      const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))
      return Number(m![1]) * 1024
    }
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) * 1024
    const p = file('rss')
    fs.writeFileSync('/proc/self/clear_refs', '5') // peak := current
    let base = rss()
    const saved = await save(id, p, chunkSize)
    expect(saved.dataChunks).toBe(size / chunkSize)
    expect(peak() - base).toBeLessThan(32 * MiB)

    const id2 = create(size)
    fs.writeFileSync('/proc/self/clear_refs', '5')
    base = rss()
    expect((await restore(id2, p, size, chunkSize, saved.chunks)).badChunks).toEqual([])
    expect(peak() - base).toBeLessThan(32 * MiB)
    expect(shmRss(id2)).toBe(size)
  })

  describe('holes', () => {
    const modes = ['mapFiles', 'mincore', 'mincoreSwapCheck', 'read'].filter((m) => m !== 'mapFiles' || native.mapFilesOpens())
    it(`every way of finding holes gives the same table; only "read" reads never-touched pages (${modes.join(', ')})`, async () => {
      const size = 24 * MiB
      const chunkSize = 4 * MiB
      const id = create(size)
      const b = attach(id)
      const touched = [3 * PAGE, 9 * MiB + 5, 9 * MiB + 2 * PAGE, size - 1]
      for (const off of touched) b[off] = 0x42
      // what the segment holds (reading b itself would allocate its holes)
      const expected = Buffer.alloc(size)
      for (const off of touched) expected[off] = 0x42
      const tables = new Set<string>()
      for (const holes of modes) {
        const p = file(holes)
        const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize, holes, fsync: false })
        tables.add(saved.chunks.toString('hex') + saved.hashes.toString('hex'))
        expect(fs.readFileSync(p).equals(expected)).toBe(true)
        expect(saved.holesLost).toBe(false)
        if (holes === 'read') {
          expect(saved.absentChunks).toBe(0)
          expect(shmRss(id)).toBeGreaterThan(size / 2) // it had to allocate the pages it read
        } else {
          expect(saved.bytesWritten).toBe(touched.length * PAGE)
          expect(saved.absentChunks).toBe(3)
          expect(shmRss(id)).toBe(touched.length * PAGE)
        }
      }
      expect(tables.size).toBe(1)
    })

    it.runIf(native.mapFilesOpens())('map_files reads a segment nobody has in page tables, without filling it', async () => {
      const size = 8 * MiB
      const id = create(size)
      const w = native.shmAttach(id, false, 0, -1, -1, -1, 2 ** 32)
      w.buffer.fill(7, 0, MiB)
      native.shmDetach(w.handle, w.buffer)
      const p = file('mapfiles')
      const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize: 4 * MiB, holes: 'mapFiles', fsync: false })
      expect(entries(saved.chunks).map((e) => e.type)).toEqual([1, 0])
      expect(saved.bytesWritten).toBe(MiB)
      expect(shmRss(id)).toBe(MiB)
    })
  })

  describe('vanished, re-stat, cancel', () => {
    it('a segment removed before the save rejects with vanished: true (IPC_STAT)', async () => {
      const gone = create(PAGE)
      native.shmRemove(gone, -1, -1)
      const e = await rejection(save(gone, null, PAGE))
      expect(e.vanished).toBe(true)
      expect(e.syscall).toBe('shmctl')
    })

    it('statAfter shows SHM_DEST for a segment removed while attached', async () => {
      const id = create(2 * PAGE)
      attach(id).fill(3)
      const live = await save(id, null, PAGE)
      expect(live.statAfter.mode & native.shmConstants.SHM_DEST).toBe(0)
      native.shmRemove(id, -1, -1) // still attached by us: it lives on, marked
      const saved = await save(id, null, PAGE)
      expect(saved.statAfter.mode & native.shmConstants.SHM_DEST).toBe(native.shmConstants.SHM_DEST)
      expect(saved.chunks.equals(live.chunks)).toBe(true)
    })

    it('a cancelled token stops save, verify and restore with ECANCELED, and leaves others alone', async () => {
      const size = 16 * MiB
      const id = create(size)
      attach(id).fill(9)
      const p = file('cancel')
      const fresh = native.cancelToken()
      const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize: MiB, holes: 'read', fsync: false, cancel: fresh })
      const token = native.cancelToken()
      native.cancelCopy(token)
      const e = await rejection(native.saveSegment({ id, uid: -1, gid: -1, path: file('cancel'), chunkSize: MiB, holes: 'read', fsync: false, cancel: token }))
      expect([e.code ?? e.errno, e.syscall]).toEqual([os.constants.errno.ECANCELED, 'cancel'])
      const v = await rejection(native.verifyFile({ path: p, size, chunkSize: MiB, chunks: saved.chunks, cancel: token }))
      expect(v.errno).toBe(os.constants.errno.ECANCELED)
      const r = await rejection(native.restoreSegment({ id: create(size), uid: -1, gid: -1, path: p, size, chunkSize: MiB, chunks: saved.chunks, stopAtFirstBad: true, cancel: token }))
      expect(r.errno).toBe(os.constants.errno.ECANCELED)
      // another token, or anything that is not a token, cancels nothing
      expect((await native.verifyFile({ path: p, size, chunkSize: MiB, chunks: saved.chunks, cancel: fresh })).badChunks).toEqual([])
      expect((await native.verifyFile({ path: p, size, chunkSize: MiB, chunks: saved.chunks, cancel: {} })).badChunks).toEqual([])
      expect(() => native.cancelCopy({})).toThrow(TypeError)
    })

    it('cancelling while a save runs stops it within a chunk', async () => {
      const size = 256 * MiB
      const id = create(size)
      attach(id).fill(1)
      const token = native.cancelToken()
      const pending = native.saveSegment({ id, uid: -1, gid: -1, path: file('cancel-run'), chunkSize: MiB, holes: 'read', fsync: true, direct: true, cancel: token })
      setTimeout(() => native.cancelCopy(token), 20)
      const e = await rejection(pending)
      expect(e.errno).toBe(os.constants.errno.ECANCELED)
    })
  })

  describe('direct I/O', () => {
    it('O_DIRECT where the file system takes it: the same file and table as buffered', async () => {
      const size = 13 * MiB + 3 * PAGE + 17 // a tail that is not block-aligned
      const id = create(size)
      const b = attach(id)
      randomBytes(size).copy(b)
      b.fill(0, 4 * MiB, 8 * MiB) // a zero chunk in the middle
      const direct = await native.saveSegment({ id, uid: -1, gid: -1, path: file('direct'), chunkSize: 4 * MiB, holes: 'read', fsync: true, direct: true })
      const buffered = await native.saveSegment({ id, uid: -1, gid: -1, path: file('buffered'), chunkSize: 4 * MiB, holes: 'read', fsync: true })
      expect(direct.chunks.equals(buffered.chunks)).toBe(true)
      expect(buffered.direct).toBe(false)
      const fsType = run('stat', ['-f', '-c', '%T', dir]).stdout.trim()
      if (['ext2/ext3', 'xfs', 'tmpfs', 'btrfs'].includes(fsType)) expect(direct.direct).toBe(true)
      const files = fs.readdirSync(dir).filter((f) => f.startsWith('direct-') || f.startsWith('buffered-')).map((f) => path.join(dir, f))
      for (const f of files.slice(-2)) expect(fs.readFileSync(f).equals(b)).toBe(true)
    })

    it.skipIf(!realRoot)('falls back to buffered writes where O_DIRECT is refused (ramfs)', () => {
      const script = `
        const native = require(${JSON.stringify(addonPath)});
        (async () => {
          const id = native.shmGet(0, 9 * 1048576 + 5, 0o1600, -1, -1);
          const a = native.shmAttach(id, false, 0, -1, -1, -1, 2 ** 32);
          for (let i = 0; i < a.buffer.length; i++) a.buffer[i] = (i * 7) & 255;
          const p = process.argv[1] + '/seg';
          const saved = await native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize: 4194304, holes: 'read', fsync: true, direct: true });
          const same = require('fs').readFileSync(p).equals(a.buffer);
          const v = await native.verifyFile({ path: p, size: a.buffer.length, chunkSize: 4194304, chunks: saved.chunks });
          native.shmRemove(id, -1, -1);
          console.log(JSON.stringify({ direct: saved.direct, same, bad: v.badChunks }));
        })().catch((e) => { console.error(e); process.exit(1); });`
      const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-ramfs-'))
      try {
        const r = run('unshare', ['--mount', 'sh', '-c', 'mount -t ramfs none "$1" && exec "$0" -e "$2" "$1"', process.execPath, mnt, script])
        expect(r.stderr).toBe('')
        expect(JSON.parse(r.stdout)).toEqual({ direct: false, same: true, bad: [] })
      } finally {
        fs.rmSync(mnt, { recursive: true, force: true })
      }
    })
  })

  describe('lanes: one segment on several threads', () => {
    // 9 MiB and a bit in chunks of 256 KiB: data, never-touched pages (holes,
    // ZERO chunks), a partial last chunk.
    function sample() {
      const size = 9 * MiB + 5 * PAGE + 123
      const id = create(size)
      const b = attach(id)
      randomBytes(3 * MiB).copy(b, 0)
      randomBytes(4 * MiB).copy(b, 5 * MiB)
      b[5 * MiB - 1] = 1 // chunk 19: one page of data, the rest holes
      b[size - 1] = 7
      return { id, b, size, chunkSize: 256 * 1024 }
    }
    const saveWith = (id: number, p: string | null, chunkSize: number, lanes: number, extra: object = {}) =>
      native.saveSegment({ id, uid: -1, gid: -1, path: p, chunkSize, holes: 'mincore', fsync: true, direct: true, lanes, ...extra })

    it('1, 2 and 3 lanes write the same file, table and hashes; the compare pass agrees', async () => {
      const { id, b, size, chunkSize } = sample()
      const runs = []
      for (const lanes of [1, 2, 3]) {
        const p = file(`lanes${lanes}`)
        runs.push({ p, saved: await saveWith(id, p, chunkSize, lanes) })
      }
      const [one, ...more] = runs
      expect(fs.readFileSync(one!.p).equals(b)).toBe(true)
      expect(entries(one!.saved.chunks).map((e) => e.type).slice(11, 21)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 1, 1])
      for (const { p, saved } of more) {
        expect(saved.chunks.equals(one!.saved.chunks)).toBe(true)
        expect(saved.hashes.equals(one!.saved.hashes)).toBe(true)
        for (const k of ['dataChunks', 'zeroChunks', 'absentChunks', 'bytesWritten']) expect([k, saved[k]]).toEqual([k, one!.saved[k]])
        expect(fs.readFileSync(p).equals(b)).toBe(true)
      }
      const previous = { chunks: one!.saved.chunks, hashes: one!.saved.hashes }
      for (const lanes of [2, 3]) expect((await saveWith(id, null, chunkSize, lanes, { previous })).unchanged).toBe(true)
      // One byte changed in the last chunk: not unchanged, and the full save differs there only.
      b[size - 2] ^= 1
      const changed = await saveWith(id, file('lanes-changed'), chunkSize, 3, { previous })
      expect(changed.unchanged).toBe(false)
      const n = entries(changed.chunks).length
      expect(changed.chunks.subarray(0, (n - 1) * 8).equals(one!.saved.chunks.subarray(0, (n - 1) * 8))).toBe(true)
      expect(changed.chunks.subarray((n - 1) * 8).equals(one!.saved.chunks.subarray((n - 1) * 8))).toBe(false)
    })

    it('carryUnchanged on 3 lanes marks exactly the unchanged data chunks carried and writes the others', async () => {
      const { id, b, chunkSize } = sample()
      const first = await saveWith(id, file('carry0'), chunkSize, 3)
      b[1 * chunkSize + 5] ^= 0xff // chunk 1
      b[30 * chunkSize] ^= 0xff // chunk 30
      const p = file('carry1')
      const r = await saveWith(id, p, chunkSize, 3, { previous: { chunks: first.chunks, hashes: first.hashes }, carryUnchanged: true })
      const types = entries(first.chunks).map((e) => e.type)
      const expected = types.map((t, i) => (t === 1 && i !== 1 && i !== 30 ? 1 : 0))
      expect([...r.carried]).toEqual(expected)
      expect(r.carriedChunks).toBe(expected.filter((x) => x).length)
      expect(r.bytesWritten).toBe(2 * chunkSize)
      const file1 = fs.readFileSync(p)
      expect(file1.subarray(chunkSize, 2 * chunkSize).equals(b.subarray(chunkSize, 2 * chunkSize))).toBe(true)
      expect(file1.subarray(30 * chunkSize, 31 * chunkSize).equals(b.subarray(30 * chunkSize, 31 * chunkSize))).toBe(true)
    })

    it('verify and restore on 3 lanes (restore also through map_files): the same bytes, and every bad chunk named, in order', async () => {
      const { id, b, size, chunkSize } = sample()
      const p = file('lanes-rv')
      const saved = await saveWith(id, p, chunkSize, 2)
      const ways = native.mapFilesOpens() ? [false, true] : [false]
      for (const mapFiles of ways) {
        const id2 = create(size)
        expect(await restore3(id2, p, size, chunkSize, saved.chunks, mapFiles)).toEqual({ badChunks: [], bytesRead: saved.bytesWritten, mapFiles })
        expect(attach(id2, true).equals(b)).toBe(true)
      }
      const fd = fs.openSync(p, 'r+')
      for (const at of [2 * chunkSize + 9, 30 * chunkSize + 1, 35 * chunkSize]) fs.writeSync(fd, Buffer.from([b[at]! ^ 0x40]), 0, 1, at)
      fs.closeSync(fd)
      expect((await native.verifyFile({ path: p, size, chunkSize, chunks: saved.chunks, lanes: 3 })).badChunks).toEqual([2, 30, 35])
      expect((await native.verifyFile({ path: p, size, chunkSize, chunks: saved.chunks, lanes: 3, first: 3, count: 30 })).badChunks).toEqual([30])
      for (const mapFiles of ways) expect((await restore3(create(size), p, size, chunkSize, saved.chunks, mapFiles)).badChunks).toEqual([2, 30, 35])
    })

    it('a cancel stops every lane: ECANCELED from save, compare, verify and restore', async () => {
      const size = 64 * MiB
      const id = create(size)
      attach(id).fill(3)
      const p = file('lanes-cancel')
      const saved = await saveWith(id, p, MiB, 3)
      const token = native.cancelToken()
      native.cancelCopy(token)
      const all = [
        saveWith(id, file('lanes-cancel'), MiB, 3, { cancel: token }),
        saveWith(id, null, MiB, 3, { cancel: token, previous: { chunks: saved.chunks, hashes: saved.hashes } }),
        native.verifyFile({ path: p, size, chunkSize: MiB, chunks: saved.chunks, lanes: 3, cancel: token }),
        native.restoreSegment({ id: create(size), uid: -1, gid: -1, path: p, size, chunkSize: MiB, chunks: saved.chunks, stopAtFirstBad: false, lanes: 3, cancel: token }),
      ]
      for (const e of await Promise.all(all.map(rejection))) expect(e.errno).toBe(os.constants.errno.ECANCELED)
    })

    async function restore3(id: number, p: string, size: number, chunkSize: number, chunks: Buffer, mapFiles = false) {
      return native.restoreSegment({ id, uid: -1, gid: -1, path: p, size, chunkSize, chunks, stopAtFirstBad: false, lanes: 3, mapFiles })
    }
  })

  it('runs off the JS thread: several saves at once', async () => {
    const ids = [create(32 * MiB), create(32 * MiB), create(32 * MiB)]
    ids.forEach((id, k) => attach(id).fill(k + 1))
    let ticks = 0
    const timer = setInterval(() => ticks++, 1)
    const results = await Promise.all(ids.map((id) => save(id, file('par'), MiB)))
    clearInterval(timer)
    results.forEach((r) => expect(r.dataChunks).toBe(32))
    expect(ticks).toBeGreaterThan(0)
  })
})

describe('savePacked', () => {
  it('many small segments in one job: each at its own page-aligned offset with its chunk table; holes and zero segments not written; a removed one is its own error', async () => {
    const sizes = [PAGE, 3 * PAGE + 100, 16 * PAGE, 2 * PAGE, PAGE]
    const ids = sizes.map((s) => create(s))
    const bufs = ids.map((id) => attach(id))
    // What each segment holds, written without reading the attachments (a read allocates holes).
    const expected = sizes.map((n) => Buffer.alloc(n))
    expected[0]!.fill(1)
    for (let i = 0; i < sizes[1]!; i++) expected[1]![i] = (i * 13) & 255
    // Segment 2: only pages 3 and 9 ever touched (the rest are holes).
    expected[2]!.fill(5, 3 * PAGE, 4 * PAGE)
    expected[2]!.fill(6, 9 * PAGE, 10 * PAGE)
    expected[0]!.copy(bufs[0]!)
    expected[1]!.copy(bufs[1]!)
    bufs[2]!.fill(5, 3 * PAGE, 4 * PAGE)
    bufs[2]!.fill(6, 9 * PAGE, 10 * PAGE)
    // Segment 3 stays all zero; segment 4 is removed before the job runs.
    const gone = ids[4]!
    native.shmRemove(gone, -1, -1)
    for (const a of attachments.splice(4)) native.shmDetach(a.handle, a.buffer)
    const p = file('pack')
    const fd = fs.openSync(p, 'w')
    try {
      const base = 8192
      const out = await native.savePacked({
        segments: ids.map((id, k) => ({ id, uid: -1, gid: -1, size: sizes[k] })),
        fd,
        offset: base,
        chunkSize: 2 * PAGE,
        holes: 'mincore',
      })
      expect(out).toHaveLength(5)
      expect(out[4]).toMatchObject({ errno: os.constants.errno.EINVAL, syscall: 'shmctl' })
      expect(out[3]).toMatchObject({ dataChunks: 0, zeroChunks: 1, bytesWritten: 0, offset: 0 })
      expect(out.slice(0, 3).map((r: { offset: number }) => r.offset)).toEqual([base, base + PAGE, base + PAGE + 4 * PAGE])
      // Only the touched pages of segment 2 were read and written (mincore: the rest are holes).
      expect(out[2].bytesWritten).toBe(2 * PAGE)
      expect(shmRss(ids[2])).toBe(2 * PAGE)
      // Its last pages are holes, yet the file holds all of it (a reader checks the length).
      expect(fs.fstatSync(fd).size).toBeGreaterThanOrEqual(out[2].offset + sizes[2]!)
      const data = fs.readFileSync(p)
      for (const k of [0, 1, 2]) {
        const r = out[k]
        expect(r.key >>> 0).toBe(0)
        expect(r.size).toBe(sizes[k])
        const saved = Buffer.alloc(sizes[k]!)
        data.copy(saved, 0, r.offset, r.offset + sizes[k]!)
        expect(saved.equals(expected[k]!)).toBe(true)
        entries(r.chunks).forEach((e, i) => {
          const chunk = expected[k]!.subarray(i * 2 * PAGE, (i + 1) * 2 * PAGE)
          expect(e.crc).toBe(crcRef(chunk))
          expect(e.type).toBe(chunk.every((b) => b === 0) ? 0 : 1)
        })
      }
    } finally {
      fs.closeSync(fd)
    }
  })
})
