/**
 * The inspection commands from the operator's side: ls, generations,
 * inspect, verify, prune, diff — tables by default, versioned JSON with --json.
 */
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, expect, test } from 'vitest'
import { run, shmpeer, tempDir } from './helpers'

const shmkeep = `${process.execPath} ${path.resolve(__dirname, '..', 'bin', 'shmkeep.js')}`
let dir: string
let cleanup: () => void
beforeEach(() => ({ dir, cleanup } = tempDir()))
afterEach(() => cleanup())

/** Run a shell script in a new IPC namespace of its own. */
function ns(script: string) {
  return run('unshare', ['--ipc', 'sh', '-c', `set -e; sk() { ${shmkeep} "$@"; }; ${script}`])
}

const mk = (key: string, size: number, text = '') =>
  `${process.execPath} -e "const {shm}=require('${path.resolve(__dirname, '..', 'dist')}'); const id=shm.get('${key}',{size:${size},create:true,mode:0o640}); const b=shm.attach(id); b.write('${text}'); shm.detach(b)";`

test('ls lists the live segments as a table and as JSON, with filters', () => {
  const r = ns(`${mk('0x1001', 4096, 'x')} ${mk('0x2002', 1 << 20)} sk ls; sk ls --json --key 0x1000-0x1fff`)
  expect(r.status, r.stderr).toBe(0)
  const [tableText, jsonText] = [r.stdout.slice(0, r.stdout.indexOf('{')), r.stdout.slice(r.stdout.indexOf('{'))]
  expect(tableText).toMatch(/^KEY\s+ID\s+SIZE\s+BYTES\s+MODE\s+OWNER\s+NATTCH\s+CPID/)
  expect(tableText).toMatch(/0x00001001\s+\d+\s+4\.0 KiB\s+4096\s+0640\s+0:0\s+0/)
  expect(tableText).toMatch(/0x00002002\s+\d+\s+1\.0 MiB\s+1048576/)
  const j = JSON.parse(jsonText)
  expect(j.schema).toBe('shmkeep.ls')
  expect(j.version).toBe(1)
  expect(j.segments.map((s: { key: string }) => s.key)).toEqual(['0x00001001'])
  expect(j.segments[0]).toMatchObject({ size: 4096, mode: 0o640, uid: 0, nattch: 0, dest: false })
})

test('generations, inspect and verify describe what is saved; verify names a damaged chunk', () => {
  const state = path.join(dir, 'state')
  let r = ns(`${mk("0x1001", 9 << 20, "hello")} sk snapshot -q -s ${state}; ${shmpeer} write key:0x1001 0 HELLO; sk snapshot -q -s ${state} --keep 5`)
  expect(r.status, r.stderr).toBe(0)
  r = run('sh', ['-c', `${shmkeep} generations -s ${state}; ${shmkeep} generations -s ${state} --json --verify`])
  expect(r.stdout).toMatch(/^ {3}gen-000000000001 .* 1 segment\(s\), 9\.0 MiB {2}stopped\n\* {2}gen-000000000002 /)
  const gens = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(gens.generations.map((g: { name: string; current: boolean; verified: boolean }) => [g.name, g.current, g.verified])).toEqual([
    ['gen-000000000001', false, true],
    ['gen-000000000002', true, true],
  ])
  r = run('sh', ['-c', `${shmkeep} inspect -s ${state} --json`])
  const detail = JSON.parse(r.stdout)
  expect(detail.schema).toBe('shmkeep.inspect')
  expect(detail.segments[0]).toMatchObject({ key: '0x00001001', size: 9 << 20, mode: 0o640, chunkSize: 4 << 20, chunkCount: 3 })
  expect(detail.segments[0].chunks).toBeUndefined()

  // Flip a byte in chunk 0 of CURRENT's data.
  const gen = path.join(state, 'gen-000000000002')
  const data = path.join(gen, fs.readdirSync(gen).find((f) => f.endsWith('.data'))!)
  const fd = fs.openSync(data, 'r+')
  fs.writeSync(fd, Buffer.from('J'), 0, 1, 0)
  fs.closeSync(fd)
  r = run('sh', ['-c', `${shmkeep} verify -s ${state}`])
  expect(r.status).toBe(1)
  expect(r.stdout).toMatch(/gen-000000000002: DAMAGED\n {2}segment 0x00001001 \(saved id \d+\): chunk\(s\) 0 fail their checksum/)
  r = run('sh', ['-c', `${shmkeep} verify -s ${state} gen-000000000001`])
  expect(r.status, r.stdout).toBe(0)
  r = run('sh', ['-c', `${shmkeep} verify -s ${state} --all --json`])
  expect(r.status).toBe(1)
  expect(JSON.parse(r.stdout).generations.map((g: { ok: boolean }) => g.ok)).toEqual([true, false])
})

test('prune keeps the newest N and never what CURRENT names; --dry-run only says', () => {
  const state = path.join(dir, 'state')
  const r0 = ns(`${mk('0x1001', 4096)} for i in 1 2 3 4; do sk snapshot -q -s ${state} --keep 0; done`)
  expect(r0.status, r0.stderr).toBe(0)
  // Point CURRENT at an old generation, as after a fallback.
  fs.writeFileSync(path.join(state, 'CURRENT'), 'gen-000000000002\n')
  let r = run('sh', ['-c', `${shmkeep} prune -s ${state} --keep 1 --dry-run`])
  expect(r.stdout).toMatch(/would remove gen-000000000003\nwould remove gen-000000000001/)
  expect(fs.readdirSync(state).filter((n) => n.startsWith('gen-')).length).toBe(4)
  r = run('sh', ['-c', `${shmkeep} prune -s ${state} --keep 1 --json`])
  const j = JSON.parse(r.stdout)
  expect(j.removed.sort()).toEqual(['gen-000000000001', 'gen-000000000003'])
  expect(fs.readdirSync(state).filter((n) => n.startsWith('gen-')).sort()).toEqual(['gen-000000000002', 'gen-000000000004'])
  r = run('sh', ['-c', `${shmkeep} prune -s ${state}`])
  expect(r.status).toBe(2)
})

test('diff tells added, removed, changed (by chunk) and unchanged segments', () => {
  const state = path.join(dir, 'state')
  const r = ns(
    `${mk('0x1001', 8 << 20, 'same')} ${mk('0x1002', 8 << 20, 'before')} ${mk('0x1003', 4096)} sk snapshot -q -s ${state};` +
      ` ${shmpeer} write key:0x1002 0 after; ipcrm -M 0x1003; ${mk('0x1004', 4096)} sk diff -s ${state}; sk diff -s ${state} --json`,
  )
  expect(r.status, r.stderr).toBe(0)
  expect(r.stdout).toMatch(/unchanged 0x00001001/)
  expect(r.stdout).toMatch(/changed\s+0x00001002 \(id \d+\): 1 of 2 chunk\(s\) differ/)
  expect(r.stdout).toMatch(/added\s+0x00001004/)
  expect(r.stdout).toMatch(/removed\s+0x00001003/)
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(j.schema).toBe('shmkeep.diff')
  expect(Object.fromEntries(j.segments.map((s: { key: string; status: string }) => [s.key, s.status]))).toEqual({
    '0x00001001': 'unchanged',
    '0x00001002': 'changed',
    '0x00001003': 'removed',
    '0x00001004': 'added',
  })
})
