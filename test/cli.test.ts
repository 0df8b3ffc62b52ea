/**
 * The command line's rough edges, as a first-time user meets them: -v/-V,
 * what each command's --help lists, errors for paths that do not exist, and
 * the demo's output in the order things happen. Runs bin/shmkeep.js (dist/).
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import { dist, root, run } from './helpers'

const bin = path.join(root, 'bin', 'shmkeep.js')
const shmkeep = (...args: string[]) => run(process.execPath, [bin, ...args], { timeout: 120_000 })
const version = require(path.join(root, 'package.json')).version as string
const COMMANDS = ['demo', 'run', 'snapshot', 'restore', 'ls', 'generations', 'inspect', 'diff', 'prune', 'verify']
/** The commands whose modules export their option table. */
const TABLED = ['ls', 'generations', 'inspect', 'diff', 'prune', 'verify']
const READERS = ['generations', 'inspect', 'verify', 'diff', 'prune']

/** The long options a help text lists on its option lines. */
function listed(help: string): string[] {
  return [...help.matchAll(/^ {2}(?:-\w, )?--([a-z][a-z-]*)/gm)].map((m) => m[1]!).sort()
}

describe('-V and -v mean one thing everywhere', () => {
  test('-V / --version prints the version at the top level and after every command', () => {
    for (const args of [['-V'], ['--version'], ...COMMANDS.map((c) => [c, '-V'])]) {
      const r = shmkeep(...args)
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(0)
      expect(r.stdout.trim(), args.join(' ')).toBe(version)
    }
  })

  test('-V after run’s `--` belongs to the app', () => {
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-cli-'))
    try {
      const r = shmkeep('run', '--state-dir', state, '--snapshot-on-exit', 'never', '--', 'sh', '-c', 'echo "app got $1"', 'sh', '-V')
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toBe('app got -V\n')
    } finally {
      fs.rmSync(state, { recursive: true, force: true })
    }
  })

  test('-v at the top level is --verbose for the command that follows; alone, a usage error that points to -V', () => {
    const alone = shmkeep('-v')
    expect(alone.status).toBe(2)
    expect(alone.stderr.split('\n')[0]).toBe('shmkeep: -v is --verbose and needs a command (the version is -V)')
    const verbose = shmkeep('-v', 'ls', '--json')
    expect(verbose.status, verbose.stderr).toBe(0)
    expect(JSON.parse(verbose.stdout)).toMatchObject({ schema: 'shmkeep.ls' })
    const unknown = shmkeep('--nonsense')
    expect(unknown.status).toBe(2)
    expect(unknown.stderr).toMatch(/unknown command "--nonsense"/)
  })
})

describe('--help lists exactly what each command takes', () => {
  for (const cmd of TABLED) {
    test(`shmkeep ${cmd} --help: every option it accepts, and no other`, () => {
      const r = shmkeep(cmd, '--help')
      expect(r.status).toBe(0)
      const options = Object.keys(require(path.join(path.dirname(dist), 'cli', cmd)).options as object)
      // -V is handled before the command's own options (src/cli/main.ts).
      expect(listed(r.stdout)).toEqual([...options, 'version'].sort())
    })
  }

  test('every command that reads a state dir lists -s; no help promises --on-conflict unless the command has it', () => {
    for (const cmd of COMMANDS) {
      const r = shmkeep(cmd, '--help')
      expect(r.status, cmd).toBe(0)
      if (READERS.includes(cmd)) expect(r.stdout, cmd).toMatch(/^ {2}-s, --state-dir DIR/m)
      if (!listed(r.stdout).includes('on-conflict')) expect(r.stdout, cmd).not.toMatch(/on-conflict|ON_CONFLICT/)
    }
  })

  test('demo takes no --json (a usage error, not text where JSON was asked for)', () => {
    const r = shmkeep('demo', '--json')
    expect(r.status).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr).toMatch(/Unknown option '--json'/)
  })
})

describe('--json where a report can go to stdout, and only there', () => {
  test('every command but run and demo lists --json in its help', () => {
    for (const cmd of COMMANDS.filter((c) => c !== 'run' && c !== 'demo')) expect(listed(shmkeep(cmd, '--help').stdout), cmd).toContain('json')
  })

  test('run --json is a usage error that names --report-file (run’s stdout is the app’s); its help lists --report-file, not --json', () => {
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'shmkeep-cli-'))
    try {
      const r = shmkeep('run', '--json', '--state-dir', state, '--', 'echo', 'app output')
      expect(r.status).toBe(2)
      expect(r.stdout).toBe('')
      expect(r.stderr.split('\n')[0]).toBe("shmkeep run: --json: run's stdout belongs to the app; --report-file PATH writes run's JSON report to a file")
      const help = listed(shmkeep('run', '--help').stdout)
      expect(help).toContain('report-file')
      expect(help).not.toContain('json')
    } finally {
      fs.rmSync(state, { recursive: true, force: true })
    }
  })

  test('run --report-file in a directory that does not exist: a usage error before the app starts', () => {
    const r = shmkeep('run', '--report-file', '/nonexistent-shmkeep/r.json', '--state-dir', '/tmp', '--', 'echo', 'app output')
    expect(r.status).toBe(2)
    expect(r.stdout).toBe('')
    expect(r.stderr.split('\n')[0]).toBe('shmkeep run: --report-file: /nonexistent-shmkeep: no such directory')
  })
})

describe('a state dir that does not exist', () => {
  for (const cmd of READERS) {
    test(`shmkeep ${cmd}: one line naming it, exit 1`, () => {
      const args = cmd === 'prune' ? ['--keep', '1'] : []
      const r = shmkeep(cmd, '-s', '/nonexistent-shmkeep/dir2', ...args)
      expect(r.status).toBe(1)
      expect(r.stderr).toBe(`shmkeep ${cmd}: state dir /nonexistent-shmkeep/dir2: no such file or directory\n`)
    })
  }
})

describe('shmkeep demo', () => {
  test('prints what happens in the order it happens: the restore, then “app started”, then the reader’s output', (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip('the demo needs root (unshare)')
    const r = shmkeep('demo')
    expect(r.status, r.stdout + r.stderr).toBe(0)
    const lines = r.stdout.split('\n')
    const restored = lines.findIndex((l) => /restored 1 segment\(s\)/.test(l))
    const read = lines.findIndex((l) => /\| a b c d e f g h i j k l m n o p q r s t u v w x y z$/.test(l))
    const exited = lines.findIndex((l, i) => i > read && /app exited with status 0/.test(l))
    const started = lines.findIndex((l) => /app started: .*counter read-abc/.test(l))
    expect(restored, r.stdout).toBeGreaterThan(-1)
    expect(started, r.stdout).toBeGreaterThan(restored)
    expect(read, r.stdout).toBeGreaterThan(started)
    expect(exited).toBeGreaterThan(read)
  })
})
