#!/usr/bin/env node
// `npm test`: run vitest inside a private IPC namespace, so the machine's own
// segments are never seen or touched and nothing the tests create outlives
// them (the namespace dies with its last process). As root: `unshare --ipc`;
// otherwise a user namespace of our own: `unshare -U -r --ipc`. Ends with the
// line "N passed, N failed" counted from vitest's JSON report.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
// `--slow` (npm run test:slow) runs the heavy suites in test/slow/ instead of
// the default ones: swap, long writer loops, container engines.
const slow = process.argv.includes('--slow')
const args = process.argv.slice(2).filter((a) => a !== '--slow')

if (process.env.SHMKEEP_TEST_NS === undefined) {
  const ways = process.getuid() === 0
    ? [['ipc', ['--ipc']], ['user+ipc', ['-U', '-r', '--ipc']]]
    : [['user+ipc', ['-U', '-r', '--ipc']]]
  for (const [name, flags] of ways) {
    const probe = spawnSync('unshare', [...flags, 'true'], { stdio: 'ignore' })
    if (probe.status !== 0) continue
    console.log(`shmkeep tests: running in a private IPC namespace (unshare ${flags.join(' ')})`)
    const r = spawnSync('unshare', [...flags, process.execPath, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, SHMKEEP_TEST_NS: name },
    })
    process.exit(r.status ?? 1)
  }
  console.error('shmkeep tests: cannot make a private IPC namespace (neither `unshare --ipc` as root nor `unshare -U -r --ipc` works here);')
  console.error('refusing to run tests that would create segments in this machine\'s own namespace.')
  process.exit(1)
}

// The addon and dist/ must be current: tests import src/ directly, but the CLI
// tests run bin/shmkeep.js, which loads dist/.
const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', root], { stdio: 'inherit' })
if (tsc.status !== 0) process.exit(tsc.status ?? 1)

const report = path.join(root, 'test', '.tmp', slow ? 'vitest-slow.json' : 'vitest.json')
fs.mkdirSync(path.dirname(report), { recursive: true })
fs.rmSync(report, { force: true })
const vitest = spawnSync(
  process.execPath,
  [path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...(slow ? ['--config', 'vitest.slow.config.mts'] : []), '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...args],
  { stdio: 'inherit', cwd: root },
)
let passed = 0
let failed = 0
try {
  const r = JSON.parse(fs.readFileSync(report, 'utf8'))
  passed = r.numPassedTests
  failed = r.numFailedTests
} catch {
  failed = 1
  console.error('shmkeep tests: vitest wrote no JSON report')
}
console.log(`${passed} passed, ${failed} failed`)
// A slow run with no slow test yet is not an error; a default run with none is.
process.exit(vitest.status !== 0 ? vitest.status ?? 1 : passed === 0 && !slow ? 1 : 0)
