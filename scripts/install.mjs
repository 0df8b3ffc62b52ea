#!/usr/bin/env node
// The package's install step (`npm install` runs it): use the prebuilt addon
// when one loads here, and otherwise compile it — offline.
//
// node-gyp needs Node's C headers. Without a configured nodedir it downloads
// them, which fails on a machine without network after a long wait, although
// the running Node's headers are usually right here: beside an official Node
// build (<prefix>/include/node) or from the distribution (/usr/include/node).
// So when no nodedir is configured, look there and hand the one that matches
// the running Node to node-gyp; when there is none, say in one line what to
// install, and let node-gyp try its download.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(path.join(root, 'package.json'))
const say = (line) => process.stderr.write(`shmkeep install: ${line}\n`)

/** The folder node-gyp takes as --nodedir (it holds include/node), or undefined. */
export function findNodedir(execPath = process.execPath, version = process.versions.node) {
  const candidates = [path.resolve(path.dirname(execPath), '..'), '/usr']
  for (const dir of new Set(candidates)) {
    const include = path.join(dir, 'include', 'node')
    if (!fs.existsSync(path.join(include, 'node_api.h')) || !fs.existsSync(path.join(include, 'common.gypi'))) continue
    // Headers of another Node (a distribution's older nodejs beside a newer
    // official build) would build an addon for the wrong ABI flags.
    if (headerVersion(include) !== version.split('.')[0]) continue
    return dir
  }
  return undefined
}

/** The major version node_version.h declares. */
function headerVersion(include) {
  try {
    const text = fs.readFileSync(path.join(include, 'node_version.h'), 'utf8')
    return /#define NODE_MAJOR_VERSION (\d+)/.exec(text)?.[1]
  } catch {
    return undefined
  }
}

/** Whether a prebuild (or an earlier build) loads in this Node. */
function addonLoads() {
  try {
    require('node-gyp-build')(root)
    return true
  } catch {
    return false
  }
}

/** The node-gyp to run: npm's own (npm sets npm_config_node_gyp), ours, or the one on PATH. */
function nodeGyp() {
  const npmOwn = process.env.npm_config_node_gyp
  if (npmOwn && fs.existsSync(npmOwn)) return [process.execPath, npmOwn]
  try {
    const pkg = require('node-gyp/package.json')
    return [process.execPath, path.join(path.dirname(require.resolve('node-gyp/package.json')), typeof pkg.bin === 'string' ? pkg.bin : pkg.bin['node-gyp'])]
  } catch {
    return ['node-gyp']
  }
}

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0

/**
 * A checkout that compiled the addon before (build/Makefile): its sources may
 * have changed since (a pull, a rebase), and node-gyp-build would load the old
 * build/ first — so bring it up to date with an incremental `node-gyp build`
 * (make recompiles what changed) rather than trust that it loads.
 */
function earlierBuild() {
  return fs.existsSync(path.join(root, 'build', 'Makefile')) && fs.existsSync(path.join(root, 'binding.gyp')) && fs.existsSync(path.join(root, 'native'))
}

function main() {
  const fromSource = process.env.npm_config_build_from_source === 'true'
  // A failed incremental build leaves the stale addon in build/, which would
  // load: compile from scratch then, rather than ask whether something loads.
  let stale = false
  if (!fromSource && earlierBuild()) {
    const [cmd, ...pre] = nodeGyp()
    const r = spawnSync(cmd, [...pre, 'build'], { cwd: root, stdio: 'inherit' })
    if (r.status === 0) return 0
    say('the incremental build of the earlier build/ failed: compiling from scratch')
    stale = true
  }
  if (!fromSource && !stale && addonLoads()) return 0

  const missing = ['python3', 'make', 'c++'].filter((c) => !onPath(c))
  if (missing.length > 0) {
    say(`no prebuilt addon for ${process.platform}-${process.arch} loads here, and compiling it needs ${missing.join(', ')} (a C++17 compiler, make, python3): install them (Debian: apt-get install g++ make python3)`)
  }
  const args = ['rebuild']
  if (!process.env.npm_config_nodedir) {
    const nodedir = findNodedir()
    if (nodedir) args.push(`--nodedir=${nodedir}`)
    else {
      say(
        `Node ${process.version}'s headers are not on this machine (looked in ${path.resolve(path.dirname(process.execPath), '..', 'include/node')} and /usr/include/node): ` +
          `node-gyp will try to download them; offline, install them (Debian: apt-get install libnode-dev; or unpack node-${process.version}-headers.tar.gz) and set npm_config_nodedir to the folder that holds include/node`,
      )
    }
  }
  const [cmd, ...pre] = nodeGyp()
  const r = spawnSync(cmd, [...pre, ...args], { cwd: root, stdio: 'inherit' })
  if (r.error) say(`cannot run node-gyp: ${r.error.message}`)
  return r.status ?? 1
}

if (process.argv[1] && fs.realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = main()
