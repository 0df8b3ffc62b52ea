/**
 * Once per test run: refuse to run outside a private IPC namespace (test/run.mjs
 * arranges one), and compile the C programs in test/fixtures/ that play the
 * legacy apps. Their binaries go to test/.tmp/bin/.
 */
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

export const root = path.resolve(__dirname, '..', '..')
export const binDir = path.join(root, 'test', '.tmp', 'bin')

export default function setup(): void {
  if (process.env.SHMKEEP_TEST_NS === undefined) {
    throw new Error('tests create SysV segments: run them with `npm test`, which gives them a private IPC namespace')
  }
  fs.mkdirSync(binDir, { recursive: true })
  const fixtures = path.join(root, 'test', 'fixtures')
  for (const file of fs.readdirSync(fixtures).filter((f) => f.endsWith('.c'))) {
    const src = path.join(fixtures, file)
    const out = path.join(binDir, file.slice(0, -2))
    if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(src).mtimeMs) continue
    execFileSync('cc', ['-O2', '-Wall', '-o', out, src], { stdio: 'inherit' })
  }
}
