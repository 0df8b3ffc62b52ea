#!/usr/bin/env node
// Figure 12 of `npm run bench` (bench/run.mjs starts it; it also runs alone:
// `node bench/kinds.mjs [--runs N]`): a namespace of many small IPC objects
// of every kind but segments — 500 semaphore sets of 4, 200 SysV queues of
// 100 messages of 100 bytes, 500 POSIX shm objects of 4 KiB — snapshotted and
// restored, against the same for one semaphore set (the fixed cost of a
// generation). Target: ≤ 1 s each. Also per kind, to show where time goes.
//
// It re-executes itself in a private IPC and mount namespace (`unshare --ipc
// --mount`, or with `-U -r` when not root) with its own tmpfs at /dev/shm:
// the machine's objects and files are never seen. Each snapshot and restore
// is timed inside a fresh Node process (library load excluded); each restore
// runs in a fresh IPC and mount namespace with an empty /dev/shm.
//
// Prints its table (Markdown) on stdout and writes bench/kinds-results.json.
// Exit status 1 when a target is missed by more than 2x or a measurement failed.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const here = path.dirname(fileURLToPath(import.meta.url))
const self = fileURLToPath(import.meta.url)
const root = path.resolve(here, '..')
const N = { sets: 500, queues: 200, messages: 100, size: 100, posix: 500, posixSize: 4096, firstSem: 0x5e140000, firstMsg: 0x5e150000 }
const MOUNT_SHM = 'mount -t tmpfs -o size=64m,mode=1777 shm /dev/shm'

const [mode, ...rest] = process.argv.slice(2)

/** `child snapshot STATE KINDS KEYS` / `child restore STATE KINDS`: one timed call, JSON on stdout. */
async function child() {
  const lib = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js'))
  const [what, stateDir, kinds, keys] = rest
  const filter = { kinds: kinds.split(','), ...(keys ? { keys } : {}) }
  const t0 = performance.now()
  if (what === 'snapshot') {
    const r = await lib.snapshot({ stateDir, keep: 1, filter, reason: 'manual' })
    const ms = performance.now() - t0
    process.stdout.write(JSON.stringify({ ms, objects: r.objects.filter((o) => o.status === 'saved').length }) + '\n')
  } else {
    const r = await lib.restore({ stateDir, filter })
    const ms = performance.now() - t0
    process.stdout.write(JSON.stringify({ ms, objects: r.objects.filter((o) => o.status === 'restored').length }) + '\n')
  }
}

function unshareArgs() {
  return process.getuid() === 0 ? ['--ipc', '--mount'] : ['-U', '-r', '--ipc', '--mount']
}

function json(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 24 })
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 4).join(' ')}…: exit ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' / ')}`)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function main() {
  const opts = parseArgs({ args: process.argv.slice(2), options: { runs: { type: 'string' } } }).values
  const runs = Math.max(1, Number(opts.runs ?? 5))
  const lib = createRequire(import.meta.url)(path.join(root, 'dist', 'index.js'))
  execSync(MOUNT_SHM)
  for (let i = 0; i < N.sets; i++) lib.sem.setValues(lib.sem.get(N.firstSem + i, { nsems: 4, create: true }), [1, 0, i % 100, 7])
  for (let i = 0; i < N.queues; i++) {
    const q = lib.msg.get(N.firstMsg + i, { create: true })
    for (let m = 0; m < N.messages; m++) lib.msg.send(q, m + 1, Buffer.alloc(N.size, m))
  }
  for (let i = 0; i < N.posix; i++) fs.writeFileSync(`/dev/shm/bench-${i}`, Buffer.alloc(N.posixSize, i % 251), { mode: 0o600 })
  const hex = (n) => `0x${n.toString(16)}`
  // Which objects each variant takes (a key filter leaves POSIX objects alone: they have names).
  const variants = {
    all: { kinds: 'sem,msg,posix-shm' },
    sem: { kinds: 'sem' },
    msg: { kinds: 'msg' },
    'posix-shm': { kinds: 'posix-shm' },
    one: { kinds: 'sem', keys: hex(N.firstSem) },
  }
  const work = fs.mkdtempSync(path.join(fs.existsSync('/var/tmp') ? '/var/tmp' : os.tmpdir(), 'shmkeep-bench-kinds-'))
  const S = {}
  const errors = {}
  try {
    for (let r = 0; r < runs; r++) {
      process.stderr.write(`bench/kinds: run ${r + 1}/${runs}\n`)
      for (const [name, v] of Object.entries(variants)) {
        const state = path.join(work, name)
        fs.rmSync(state, { recursive: true, force: true })
        for (const [step, argv] of [
          ['snap', [process.execPath, self, 'child', 'snapshot', state, v.kinds, v.keys ?? '']],
          ['restore', ['unshare', ...unshareArgs(), 'sh', '-c', `${MOUNT_SHM} && exec "$@"`, 'sh', process.execPath, self, 'child', 'restore', state, v.kinds]],
        ]) {
          try {
            const o = json(argv[0], argv.slice(1))
            ;(S[`${step}.${name}`] ??= []).push(o.ms / 1e3)
          } catch (e) {
            errors[`${step}.${name}`] = e.message
          }
        }
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
  const rows = []
  const what = { all: `${N.sets} sets + ${N.queues} queues × ${N.messages} + ${N.posix} POSIX objects`, sem: `${N.sets} semaphore sets`, msg: `${N.queues} queues × ${N.messages} messages`, 'posix-shm': `${N.posix} POSIX shm objects of 4 KiB` }
  let far = false
  for (const step of ['snap', 'restore']) {
    const one = S[`${step}.one`] ? median(S[`${step}.one`]) : undefined
    for (const name of ['all', 'sem', 'msg', 'posix-shm']) {
      const xs = S[`${step}.${name}`]
      const med = xs ? median(xs) : undefined
      const judged = name === 'all'
      if (judged && (med === undefined || med > 2)) far = true
      rows.push(
        `| 12 | ${what[name]}: ${step === 'snap' ? 'snapshot' : 'restore'} | ${med === undefined ? `error: ${errors[`${step}.${name}`]}` : `${(med * 1e3).toFixed(0)} ms (${(Math.min(...xs) * 1e3).toFixed(0)}–${(Math.max(...xs) * 1e3).toFixed(0)})`} | ${one === undefined ? '—' : `${(one * 1e3).toFixed(0)} ms`} | ${med !== undefined && one ? `${(med / one).toFixed(1)}×` : '—'} | ${judged ? '≤ 1 s' : '—'} | ${judged ? (med !== undefined && med <= 1 ? 'pass' : 'MISS') : '—'} |`,
      )
    }
  }
  const table = ['| fig | what | median (min–max) | one semaphore set | ratio | target | result |', '|---|---|---|---|---|---|---|', ...rows].join('\n')
  console.log(`figure 12: many small IPC objects, ${runs} runs (${os.loadavg()[0].toFixed(1)} load)\n\n${table}\n`)
  fs.writeFileSync(path.join(here, 'kinds-results.json'), JSON.stringify({ startedAt: new Date().toISOString(), runs, counts: N, samples: S, errors, table }, null, 1) + '\n')
  return far ? 1 : 0
}

function execSync(cmd) {
  const r = spawnSync('sh', ['-c', cmd], { stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}`)
}

if (mode === 'child') {
  await child()
} else if (process.env.SHMKEEP_BENCH_KINDS_NS === undefined) {
  // Private IPC and mount namespaces first: the machine's objects and /dev/shm are never touched.
  const r = spawnSync('unshare', [...unshareArgs(), process.execPath, self, ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, SHMKEEP_BENCH_KINDS_NS: '1' } })
  process.exit(r.status ?? 1)
} else {
  process.exit(await main())
}
