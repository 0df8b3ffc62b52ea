/**
 * What the install tests share: a copy of the package's sources as a clean
 * clone has them, npm run with no configured nodedir (an empty user config,
 * npm_config_nodedir unset) and, as root, with no network at all
 * (`unshare -n`: no interface but a down loopback, so a download fails at
 * once instead of being answered by a cache or a proxy).
 */
import fs from 'node:fs'
import path from 'node:path'
import { root, run, type ChildResult } from './helpers'

const unshare = run('sh', ['-c', 'command -v unshare']).stdout.trim() || 'unshare'

/** Copy the package's sources into `dir` (no node_modules, build, dist, prebuilds, tests, .git). */
export function stageSources(dir: string, { linkNodeModules = true } = {}): void {
  fs.mkdirSync(dir, { recursive: true })
  const notSources = new Set(['node_modules', 'build', 'dist', 'prebuilds', 'test', 'bench', '.git', 'coverage'])
  for (const name of fs.readdirSync(root)) {
    if (notSources.has(name) || name.endsWith('.tgz')) continue
    fs.cpSync(path.join(root, name), path.join(dir, name), { recursive: true })
  }
  if (linkNodeModules) fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'))
}

/** Whether commands can be cut off from every network here (`unshare -n` needs root). */
export function canCutNetwork(): boolean {
  return run('unshare', ['-n', 'true']).status === 0
}

/** The environment of an npm run that has no nodedir configured anywhere, and a user config of `userconfig`. */
export function npmEnv(userconfig: string, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  fs.writeFileSync(userconfig, 'fund=false\naudit=false\nupdate-notifier=false\n')
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_userconfig: userconfig, ...extra }
  for (const k of Object.keys(env)) if (/^npm_config_nodedir$/i.test(k)) delete env[k]
  return env
}

/** `npm ARGS` in `cwd`, inside `unshare -n` when `offline`. */
export function npmIn(cwd: string, args: string[], env: NodeJS.ProcessEnv, { offline = true, timeout = 300_000 } = {}): ChildResult {
  // Absolute paths: `env` may have a PATH of node and npm only.
  const npm = run('sh', ['-c', 'command -v npm'], { env }).stdout.trim() || 'npm'
  const argv = offline ? [unshare, '-n', npm, ...args] : [npm, ...args]
  return run(argv[0]!, argv.slice(1), { cwd, env, timeout })
}
