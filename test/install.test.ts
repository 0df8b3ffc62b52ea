/**
 * Installing shmkeep the ways a new user does, with no network at all
 * (`unshare -n`) and no nodedir configured anywhere:
 *  - `npm install` in a clean clone compiles the addon against the running
 *    Node's headers found on this machine (scripts/install.mjs), and says in
 *    one line what to install when there are none;
 *  - a prebuild that loads is used as it is: nothing is compiled;
 *  - `npm pack` ships prebuilds and the runtime dependencies (bundled), and the
 *    tarball installs globally with --offline, an empty cache and no compiler.
 * The zig prebuilds (glibc floor) and `npm ci` of a whole clean clone are in
 * test/slow/prebuild.test.ts. Keys of this file: 0x5500xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { root, run, tempDir } from './helpers'
import { canCutNetwork, npmEnv, npmIn, stageSources } from './install-kit'

const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string }
const headers = ['/usr/include/node', path.resolve(path.dirname(process.execPath), '..', 'include', 'node')].find((d) => fs.existsSync(path.join(d, 'node_api.h')))
const offline = canCutNetwork()
const noNetwork = offline ? '' : 'cannot cut this process off the network (unshare -n needs root)'

let tmp: { dir: string; cleanup(): void }
let n = 0
const fresh = (name: string) => path.join(tmp.dir, `${name}-${++n}`)

beforeAll(() => {
  tmp = tempDir()
})
afterAll(() => tmp?.cleanup())

/** A folder holding only node, npm and sh (npm runs scripts with it): no compiler, no make, no python. */
function bareBin(): string {
  const bin = fresh('bin')
  fs.mkdirSync(bin)
  for (const prog of ['node', 'npm', 'sh']) {
    const real = run('sh', ['-c', `command -v ${prog}`]).stdout.trim()
    fs.symlinkSync(prog === 'node' ? process.execPath : fs.realpathSync(real), path.join(bin, prog))
  }
  return bin
}

/** Whether the addon in `dir` loads through node-gyp-build, and from where. */
function addonIn(dir: string, env: NodeJS.ProcessEnv = process.env) {
  return run(process.execPath, ['-e', `console.log(JSON.stringify({ file: require('node-gyp-build').resolve(${JSON.stringify(dir)}), api: typeof require('node-gyp-build')(${JSON.stringify(dir)}).shmGet }))`], { cwd: dir, env })
}

describe('npm install from a clean clone, offline, no nodedir configured', () => {
  test('the install step compiles the addon against the running Node’s headers (no download)', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    if (!headers) ctx.skip(`Node's headers are not on this machine (neither /usr/include/node nor beside ${process.execPath})`)
    const stage = fresh('clone')
    stageSources(stage)
    const env = npmEnv(fresh('npmrc'), { npm_config_devdir: fresh('devdir') }) // no header cache to fall back on
    const r = npmIn(stage, ['run', 'install'], env)
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stdout + r.stderr).not.toMatch(/gyp http GET|headers\.tar/)
    expect(r.stderr).not.toMatch(/headers are not on this machine/)
    const loaded = addonIn(stage)
    expect(loaded.status, loaded.stderr).toBe(0)
    expect(loaded.json).toEqual({ file: path.join(stage, 'build', 'Release', 'shmkeep.node'), api: 'function' })

    // Then the sources change (a pull brings new native code) and the user
    // runs `npm install` again: the earlier build/ is brought up to date, not
    // loaded as it is (it would lack what the new TypeScript calls).
    const addon = path.join(stage, 'native', 'addon.cc')
    const probe = 'exports.Set("installProbe", Napi::Number::New(env, 42));\n  return exports;'
    fs.writeFileSync(addon, fs.readFileSync(addon, 'utf8').replace(/return exports;/, probe))
    const again = npmIn(stage, ['run', 'install'], env)
    expect(again.status, again.stdout + again.stderr).toBe(0)
    const probed = run(process.execPath, ['-e', `console.log(require('node-gyp-build')(${JSON.stringify(stage)}).installProbe)`], { cwd: stage })
    expect(probed.stdout.trim(), probed.stderr).toBe('42')
  }, 600_000)

  test('(control) with the headers hidden: one line says what to install, then node-gyp’s download fails', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    if (!headers) ctx.skip('no headers to hide')
    if (run('unshare', ['-m', 'true']).status !== 0) ctx.skip('cannot make a mount namespace to hide the headers in')
    const stage = fresh('clone')
    stageSources(stage)
    const env = npmEnv(fresh('npmrc'), { npm_config_devdir: fresh('devdir') })
    // An empty tmpfs over every place the install step looks.
    const hide = [...new Set(['/usr/include/node', path.resolve(path.dirname(process.execPath), '..', 'include', 'node')])].filter((d) => fs.existsSync(d))
    const script = `${hide.map((d) => `mount -t tmpfs none '${d}'`).join(' && ')} && exec npm run install`
    const r = run('unshare', ['-n', '-m', 'sh', '-c', script], { cwd: stage, env, timeout: 300_000 })
    expect(r.status).not.toBe(0)
    const lines = r.stderr.split('\n').filter((l) => l.startsWith('shmkeep install: '))
    expect(lines, r.stderr).toHaveLength(1)
    expect(lines[0]).toMatch(/Node v[\d.]+'s headers are not on this machine \(looked in .*include\/node and \/usr\/include\/node\)/)
    expect(lines[0]).toMatch(/apt-get install libnode-dev.*set npm_config_nodedir/)
    expect(fs.existsSync(path.join(stage, 'build', 'Release', 'shmkeep.node'))).toBe(false)
  }, 400_000)

  test('a prebuild that loads is used as it is: nothing is compiled, no compiler needed', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    const stage = fresh('clone')
    stageSources(stage)
    const prebuild = path.join(stage, 'prebuilds', `linux-${process.arch}`, 'shmkeep.glibc.node')
    fs.mkdirSync(path.dirname(prebuild), { recursive: true })
    fs.copyFileSync(path.join(root, 'build', 'Release', 'shmkeep.node'), prebuild)
    const env = npmEnv(fresh('npmrc'), { PATH: bareBin() })
    const r = npmIn(stage, ['run', 'install'], env)
    expect(r.status, r.stdout + r.stderr).toBe(0)
    expect(r.stderr).not.toMatch(/shmkeep install:/)
    expect(fs.existsSync(path.join(stage, 'build'))).toBe(false)
    expect(addonIn(stage).json).toEqual({ file: prebuild, api: 'function' })
  }, 120_000)
})

describe('npm pack, then npm install -g of the tarball with no network, an empty cache and no compiler', () => {
  let stage = ''
  let tarball = ''
  let files: string[] = []
  let packLog = ''
  beforeAll(() => {
    if (noNetwork) return
    stage = fresh('pack')
    stageSources(stage)
    // The addon built here as the prebuild (it loads here): `npm run prebuild`
    // itself is test/package.test.ts's (--host) and test/slow/prebuild.test.ts's (zig).
    const prebuild = path.join(stage, 'prebuilds', `linux-${process.arch}`, 'shmkeep.glibc.node')
    fs.mkdirSync(path.dirname(prebuild), { recursive: true })
    fs.copyFileSync(path.join(root, 'build', 'Release', 'shmkeep.node'), prebuild)
    const env = npmEnv(fresh('npmrc'))
    const pack = npmIn(stage, ['pack', '--json'], env) // prepack keeps the fresh prebuild; prepare runs tsc
    packLog = pack.stdout + pack.stderr
    if (pack.status !== 0) throw new Error(`npm pack failed:\n${packLog}`)
    const packed = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>
    tarball = path.join(stage, packed[0]!.filename)
    files = packed[0]!.files.map((f) => f.path)
  }, 120_000)

  test('the tarball holds the prebuild and its runtime dependencies (bundled), so it needs no registry', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    expect(packLog).toMatch(/prebuild: keeping prebuilds\//)
    expect(files).toContain(`prebuilds/linux-${process.arch}/shmkeep.glibc.node`)
    expect(files).toContain('node_modules/node-gyp-build/package.json')
    expect(files).toContain('node_modules/node-addon-api/package.json')
    expect(files).toContain('scripts/install.mjs')
    expect(files.filter((f) => /^node_modules\/(?!node-gyp-build\/|node-addon-api\/)/.test(f))).toEqual([])
  })

  test('installs with --offline, an empty cache, inside unshare -n, with only node and npm on PATH; the command and the library work', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    const prefix = fresh('prefix')
    const cache = fresh('cache')
    fs.mkdirSync(cache)
    const env = npmEnv(fresh('npmrc'), { PATH: bareBin() })
    const r = npmIn(stage, ['install', '-g', tarball, '--offline', '--cache', cache, '--prefix', prefix], env)
    expect(r.status, r.stdout + r.stderr).toBe(0)
    const installed = path.join(prefix, 'lib', 'node_modules', 'shmkeep')
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false) // nothing compiled
    expect(fs.existsSync(path.join(installed, 'node_modules', 'node-gyp-build', 'package.json'))).toBe(true)

    const version = run(path.join(prefix, 'bin', 'shmkeep'), ['--version'], { env })
    expect(version.status, version.stderr).toBe(0)
    expect(version.stdout.trim()).toBe(pkg.version)
    const lib = run(
      process.execPath,
      ['-e', `const { shm } = require(${JSON.stringify(installed)}); const id = shm.get(0x55000001, { size: 4096, create: true, exclusive: true }); const b = shm.attach(id); b.write('offline'); const t = b.toString('latin1', 0, 7); shm.detach(b); shm.remove(id); console.log(JSON.stringify({ t, addon: Object.keys(require.cache).find((f) => f.endsWith('.node')) }))`],
      { env },
    )
    expect(lib.status, lib.stderr).toBe(0)
    expect(lib.json).toEqual({ t: 'offline', addon: path.join(installed, 'prebuilds', `linux-${process.arch}`, 'shmkeep.glibc.node') })
  }, 300_000)

  test('(control) packing with no prebuild and no working prebuild compiler stops, saying so', (ctx) => {
    if (noNetwork) ctx.skip(noNetwork)
    const bare = fresh('pack')
    stageSources(bare)
    const r = npmIn(bare, ['pack'], npmEnv(fresh('npmrc'), { ZIG: '/bin/false' }))
    expect(r.status).not.toBe(0)
    expect(r.stderr).toMatch(/prebuild: no prebuilds: the package would not install without a compiler, so packing stops here/)
    expect(fs.readdirSync(bare).filter((f) => f.endsWith('.tgz'))).toEqual([])
  }, 300_000)
})
