/**
 * The packaged install: the tarball that `npm pack` makes (with the prebuild
 * that `npm run prebuild` makes) installs into an empty folder with
 * `npm install --ignore-scripts ./shmkeep-*.tgz` and loads its addon with no
 * compiler and no install script — from CommonJS, from ESM and as a command.
 *
 * Nothing is built in /work/main: the package's files are copied to a temp
 * staging folder (node_modules linked), and `npm run prebuild` and `npm pack`
 * run there. Keys of this file: 0x5400xxxx.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { root, run, tempDir, type ChildResult } from './helpers'

const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: string; version: string; files: string[] }

let tmp: { dir: string; cleanup(): void }
let stage: string
let app: string
let tarball = ''
let tarList: string[] = []
/** Why the install could not be tested (the registry is unreachable), or '' when it was. */
let skipReason = ''
let setupLog = ''

const env = (): NodeJS.ProcessEnv => {
  const e: NodeJS.ProcessEnv = {
    // Offline, give up soon (npm's default retries take minutes) so the install can be skipped in time.
    npm_config_fetch_retries: '1',
    npm_config_fetch_retry_mintimeout: '2000',
    npm_config_fetch_retry_maxtimeout: '5000',
    npm_config_fetch_timeout: '60000',
    ...process.env,
    npm_config_audit: 'false',
    npm_config_fund: 'false',
    npm_config_update_notifier: 'false',
    SHMKEEP_PREBUILD_CC: 'host', // this machine's compiler: quick (the zig build: test/slow/prebuild.test.ts)
  }
  // node-gyp builds against the installed headers, never downloads them (as .ci does).
  if (!e.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) e.npm_config_nodedir = '/usr'
  return e
}

function npm(args: string[], cwd: string): ChildResult {
  // Generous: `prebuild` compiles the addon for two targets, and CI machines are shared.
  const r = run('npm', args, { cwd, env: env(), timeout: 420_000 })
  setupLog += `\n$ npm ${args.join(' ')}  (in ${cwd})\n${r.stdout}\n${r.stderr}`
  return r
}

const networkError = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network|request to .* failed/i

beforeAll(() => {
  tmp = tempDir()
  stage = path.join(tmp.dir, 'stage')
  app = path.join(tmp.dir, 'app')
  const packDir = path.join(tmp.dir, 'pack')
  fs.mkdirSync(stage)
  fs.mkdirSync(app)
  fs.mkdirSync(packDir)

  // The package's sources, as a clean clone would have them (plus node_modules):
  // everything but what is built, installed or only for development here.
  const notSources = new Set(['node_modules', 'build', 'dist', 'prebuilds', 'test', '.git'])
  for (const name of fs.readdirSync(root)) {
    if (notSources.has(name) || name.endsWith('.tgz')) continue
    fs.cpSync(path.join(root, name), path.join(stage, name), { recursive: true })
  }
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(stage, 'node_modules'))

  const prebuild = npm(['run', 'prebuild'], stage)
  if (prebuild.status !== 0) throw new Error(`npm run prebuild failed:${setupLog}`)
  const pack = npm(['pack', '--json', '--pack-destination', packDir], stage) // runs "prepare" (tsc)
  if (pack.status !== 0) throw new Error(`npm pack failed:${setupLog}`)
  const packed = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as Array<{ filename: string; files: Array<{ path: string }> }>
  tarball = path.join(packDir, packed[0]!.filename)
  tarList = packed[0]!.files.map((f) => f.path)

  npm(['init', '-y'], app)
  // @types/node beside it, as a TypeScript app has it (an optional peer of shmkeep).
  const install = npm(['install', '--ignore-scripts', '--no-audit', '--no-fund', tarball, '@types/node@20'], app)
  if (install.status !== 0) {
    if (networkError.test(install.stderr)) skipReason = `the npm registry is unreachable for the tarball's dependencies: ${install.stderr.trim().split('\n').slice(-3).join(' ')}`
    else throw new Error(`npm install of the tarball failed:${setupLog}`)
  }
}, 900_000)

afterAll(() => {
  tmp?.cleanup()
})

/** The linux-x64 addons in the tarball (prebuildify names them by their tags, e.g. shmkeep.glibc.node). */
function prebuilds(): string[] {
  return tarList.filter((f) => /^prebuilds\/linux-x64\/[^/]+\.node$/.test(f))
}

/** node -e CODE in the app folder; `input-type=module` for ESM. */
function nodeInApp(code: string, { esm = false, env: extra = {} as NodeJS.ProcessEnv } = {}): ChildResult {
  const args = esm ? ['--input-type=module', '-e', code] : ['-e', code]
  return run(process.execPath, args, { cwd: app, env: { ...process.env, ...extra } })
}

describe('the packed tarball', () => {
  test('holds the prebuild, the compiled JS, the types, the command and the addon sources; no build/, src/ or tests', () => {
    expect(path.basename(tarball)).toBe(`${pkg.name}-${pkg.version}.tgz`)
    expect(prebuilds()).not.toEqual([])
    for (const f of ['package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/native.js', 'bin/shmkeep.js', 'binding.gyp', 'native/shm.cc']) {
      expect(tarList, f).toContain(f)
    }
    // node_modules/: only the bundled runtime dependencies (bundleDependencies: installs with no registry).
    expect(tarList.filter((f) => /^(build|src|test|node_modules)\//.test(f) && !/^node_modules\/(node-gyp-build|node-addon-api)\//.test(f))).toEqual([])
  })

  test('the linux-x64 prebuild is a shared object', () => {
    for (const f of prebuilds()) {
      const node = fs.readFileSync(path.join(stage, f))
      expect(node.subarray(0, 4).toString('latin1'), f).toBe('\x7fELF')
    }
  })
})

describe('installed into an empty folder with --ignore-scripts', () => {
  test('the addon comes from prebuilds/ (nothing was compiled)', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    const installed = path.join(app, 'node_modules', 'shmkeep')
    for (const f of prebuilds()) expect(fs.existsSync(path.join(installed, f)), f).toBe(true)
    expect(fs.existsSync(path.join(installed, 'build'))).toBe(false)
    expect(fs.existsSync(path.join(installed, 'node_modules', 'node-gyp-build'))).toBe(true) // bundled inside the package
    const r = nodeInApp(`const dir = require('node:path').dirname(require.resolve('shmkeep/package.json')); console.log(require(require.resolve('node-gyp-build', { paths: [dir] })).resolve(dir))`)
    expect(r.status, r.stderr).toBe(0)
    expect(prebuilds().map((f) => path.join(installed, f))).toContain(r.stdout.trim())
  })

  test('require("shmkeep") creates, attaches, writes, reads back and removes a segment — no compiler on PATH', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    const r = nodeInApp(
      `const { shm, formatKey } = require('shmkeep');
       const id = shm.get(0x54000001, { size: 4096, create: true, exclusive: true });
       const b = shm.attach(id);
       b.write('from the tarball');
       const again = shm.attach(id, { readonly: true });
       const out = { key: formatKey(shm.stat(id).key), nattch: shm.stat(id).nattch, text: again.toString('latin1', 0, 16) };
       shm.detach(b); shm.detach(again); shm.remove(id);
       out.gone = (() => { try { shm.get(0x54000001); return false } catch (e) { return e.code } })();
       out.addon = Object.keys(require.cache).find((f) => f.endsWith('.node'));
       console.log(JSON.stringify(out))`,
      { env: { PATH: path.dirname(process.execPath) } },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toMatchObject({ key: '0x54000001', nattch: 2, text: 'from the tarball', gone: 'ENOENT' })
    expect(prebuilds().map((f) => path.join(app, 'node_modules', 'shmkeep', f))).toContain(r.json.addon)
  })

  test('ESM: import { shm, mmap } from "shmkeep" works', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    const file = path.join(tmp.dir, 'esm.bin')
    const r = nodeInApp(
      `import { shm, mmap, lockFile, parseKey, formatKey, KeyRanges, IPC_PRIVATE } from 'shmkeep';
       import fs from 'node:fs';
       const id = shm.get(IPC_PRIVATE, { size: 4096 });
       const b = shm.attach(id); b.write('esm'); const text = b.toString('latin1', 0, 3); shm.detach(b); shm.remove(id);
       const m = mmap.map(${JSON.stringify(file)}, { length: 10, write: true, create: true }); m.write('mapped'); mmap.sync(m); mmap.unmap(m);
       const lock = await lockFile(${JSON.stringify(file + '.lock')}); lock.release();
       console.log(JSON.stringify({ text, file: fs.readFileSync(${JSON.stringify(file)}, 'latin1').slice(0, 6), key: formatKey(parseKey('0x162e')), has: new KeyRanges('1-3').has(2) }))`,
      { esm: true },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toEqual({ text: 'esm', file: 'mapped', key: '0x0000162e', has: true })
  })

  test('npx shmkeep --version prints the package version', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    // `--no --`: never fetch a package of that name; run the installed bin.
    const r = run('npx', ['--no', '--', 'shmkeep', '--version'], { cwd: app, env: env() })
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe(pkg.version)
    const bin = run(path.join(app, 'node_modules', '.bin', 'shmkeep'), ['-V'], { cwd: app })
    expect(bin.stdout.trim()).toBe(pkg.version)
  })
})

/**
 * The shipped types, as an app compiles them: `--strict`, ES modules and
 * CommonJS, with each TypeScript major. TypeScript 6+ no longer loads
 * @types/* unless told, so the .d.ts must reference Node's types itself
 * (`/// <reference types="node" />`), and @types/node is the app's (an
 * optional peer dependency of the package). The compilers are installed from the
 * npm registry into a folder of their own at test time.
 */
describe('the shipped types compile in a strict app with TypeScript 5, 6 and 7', () => {
  let tools = ''
  let toolsSkip = ''
  beforeAll(() => {
    if (skipReason) return
    tools = path.join(tmp.dir, 'tools')
    fs.mkdirSync(tools)
    npm(['init', '-y'], tools)
    const r = npm(['install', '--no-audit', '--no-fund', 'ts5@npm:typescript@5', 'ts6@npm:typescript@6', 'ts7@npm:typescript@7'], tools)
    if (r.status !== 0) {
      if (networkError.test(r.stderr)) toolsSkip = `the npm registry is unreachable for typescript@5/6/7: ${r.stderr.trim().split('\n').slice(-2).join(' ')}`
      else throw new Error(`npm install of typescript@5/6/7 failed:${setupLog}`)
    }
    const check = path.join(app, 'check')
    fs.mkdirSync(check)
    const body = `
      const id: number = shm.get('0x5a17', { size: 4096, create: true, mode: 0o600 })
      {
        using b: AttachedBuffer = shm.attach(id, { readonly: false })
        b.writeUInt32LE(1, 0)
      }
      const m: Buffer = mmap.map('/tmp/types.bin', { length: 4096, write: true, create: true })
      mmap.unmap(m)
      const options: ShutdownOptions = { stateDir: '/var/lib/shmkeep', grace: 30, keys: [0x5a17, '0x5a18'], signals: ['SIGTERM'] }
      createShutdown(options).step('drain', (signal: AbortSignal) => signal.aborted, { timeout: 3 })
      try {
        shm.get(1)
      } catch (e) {
        if (e instanceof SystemError) console.log(e.code.length + e.errno, e.syscall)
        if (e instanceof OptionRangeError) console.log(e.option)
        if (e instanceof StateFileError || e instanceof DetachedError) console.log(e.message)
        console.log(hasCode(e, 'ENOENT'))
      }
      export async function later(): Promise<number> {
        const r = await snapshot({ stateDir: '/var/lib/shmkeep', filter: { keys: [0x5a17] } })
        return r.segments.length
      }
    `
    const imports = `import { shm, mmap, snapshot, createShutdown, hasCode, SystemError, OptionRangeError, StateFileError, DetachedError, type AttachedBuffer, type ShutdownOptions } from 'shmkeep'\n`
    fs.writeFileSync(path.join(check, 'esm.mts'), imports + body)
    fs.writeFileSync(path.join(check, 'cjs.cts'), imports + body)
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        // No "types": what a fresh app has. skipLibCheck off: the .d.ts themselves are checked.
        compilerOptions: { strict: true, noEmit: true, target: 'ES2022', lib: ['ES2022'], module: 'nodenext', moduleResolution: 'nodenext', skipLibCheck: false },
        include: ['check'],
      }),
    )
  }, 300_000)

  for (const major of [5, 6, 7]) {
    test(`TypeScript ${major}.x: no error`, (ctx) => {
      if (skipReason) ctx.skip(skipReason)
      if (toolsSkip) ctx.skip(toolsSkip)
      const tsc = path.join(tools, 'node_modules', `ts${major}`, 'bin', 'tsc')
      const version = run(process.execPath, [tsc, '--version'], { cwd: app })
      expect(version.stdout).toMatch(new RegExp(`Version ${major}\\.`))
      const r = run(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: app })
      expect(r.stdout + r.stderr).toBe('')
      expect(r.status).toBe(0)
    })
  }

  test('the .d.ts reference Node’s types, and @types/node is an optional peer', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    expect(fs.readFileSync(path.join(app, 'node_modules', 'shmkeep', 'dist', 'index.d.ts'), 'utf8')).toMatch(/^\/\/\/ <reference types="node"/m)
    expect(fs.existsSync(path.join(app, 'node_modules', '@types', 'node', 'package.json'))).toBe(true)
    const shipped = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', 'shmkeep', 'package.json'), 'utf8'))
    expect(shipped.peerDependenciesMeta['@types/node']).toEqual({ optional: true })
  })
})

describe('error classes are one and the same from CommonJS and ES modules', () => {
  test('instanceof SystemError / OptionTypeError / DetachedError / StateFileError, across require and import', (ctx) => {
    if (skipReason) ctx.skip(skipReason)
    const r = nodeInApp(
      `import { createRequire } from 'node:module';
       import * as esm from 'shmkeep';
       const cjs = createRequire(import.meta.url)('shmkeep');
       const out = {};
       for (const name of ['SystemError', 'OptionTypeError', 'OptionRangeError', 'DetachedError', 'StateFileError', 'SnapshotError', 'RestoreError']) out[name] = typeof esm[name] === 'function' && esm[name] === cjs[name];
       try { cjs.shm.get(0x54000002) } catch (e) { out.system = e instanceof esm.SystemError && e.code }
       try { esm.shm.get(0x54000002, { sise: 1 }) } catch (e) { out.option = e instanceof cjs.OptionTypeError && e instanceof TypeError && e.option }
       try { await esm.inspect(process.cwd(), 'gen-999') } catch (e) { out.state = e instanceof cjs.StateFileError }
       console.log(JSON.stringify(out))`,
      { esm: true },
    )
    expect(r.status, r.stderr).toBe(0)
    expect(r.json).toEqual({
      SystemError: true,
      OptionTypeError: true,
      OptionRangeError: true,
      DetachedError: true,
      StateFileError: true,
      SnapshotError: true,
      RestoreError: true,
      system: 'ENOENT',
      option: 'sise',
      state: true,
    })
  })
})
