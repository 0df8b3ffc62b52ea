#!/usr/bin/env node
// `npm run prebuild`: N-API prebuilds that npm pack ships in prebuilds/, so
// users install without a compiler or install scripts. linux-x64 always (on
// an x64 host); linux-arm64 too when Debian's cross compiler is there
// (apt-get install g++-aarch64-linux-gnu). One build serves every Node >= 20.
import { execFileSync, spawnSync } from 'node:child_process'
import os from 'node:os'

const prebuildify = ['node_modules/.bin/prebuildify', '--napi', '--strip', '--tag-libc', '--target', 'node@20.0.0']
const run = (args, env = {}) => execFileSync(args[0], args.slice(1), { stdio: 'inherit', env: { ...process.env, ...env } })

run(prebuildify)
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
if (os.arch() === 'x64') {
  if (has('aarch64-linux-gnu-g++')) {
    run([...prebuildify, '--arch', 'arm64'], {
      CC: 'aarch64-linux-gnu-gcc',
      CXX: 'aarch64-linux-gnu-g++',
      LINK: 'aarch64-linux-gnu-g++',
      PREBUILD_STRIP_BIN: 'aarch64-linux-gnu-strip',
    })
  } else {
    console.log('prebuild: no aarch64-linux-gnu-g++ here, so no linux-arm64 prebuild (apt-get install g++-aarch64-linux-gnu)')
  }
}
