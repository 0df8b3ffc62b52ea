/**
 * `shmkeep diff` over every kind: live semaphore sets, SysV queues, POSIX
 * shm objects and POSIX queues against CURRENT — added, removed, changed
 * (mode, owner, the kind's attributes, contents), unchanged; POSIX queues
 * without their messages, and left as they were. In a "container" with
 * private /dev/shm and /dev/mqueue (test/posix-kit.ts), real C apps
 * (test/fixtures/semq.c, posixapp.c).
 *
 * Keys of this file: 0x6b03xxxx.
 */
import path from 'node:path'
import { expect, test } from 'vitest'
import { binDir } from './helpers'
import { shmkeepBin } from './e2e/container'
import { posixContainer, testScratch } from './posix-kit'

const semq = path.join(binDir, 'semq')
const posixapp = path.join(binDir, 'posixapp')
const sk = `${process.execPath} ${shmkeepBin}`

const { scratch, containers, stateDir } = testScratch('shmkeep-kdiff-')

async function inContainer(script: string) {
  const c = posixContainer(scratch, ['sh', '-c', `set -e; ${script}`])
  containers.push(c)
  return c.exited
}

test('diff: added, removed, changed and unchanged objects of every kind, with what changed; POSIX queues keep their messages', async () => {
  const state = stateDir()
  const [A, B] = ['0x6b030001', '0x6b030002']
  const r = await inContainer(
    [
      `${semq} put ${A} >/dev/null; ${semq} put ${B} >/dev/null; ${posixapp} put app >/dev/null; ${posixapp} put other >/dev/null`,
      `${sk} snapshot -q -s ${state} --kind all`,
      // A: one more message and a counter one higher; B removed.
      `${semq} put ${A} >/dev/null; ipcrm -S ${B} -Q ${B}`,
      // /app: counter and tail, one more message; /other: mode; /sem.other removed; /new added.
      `${posixapp} put app >/dev/null; chmod 640 /dev/shm/other; rm /dev/shm/sem.other; echo hi > /dev/shm/new`,
      `${sk} diff -s ${state} --kind all; ${sk} diff -s ${state} --kind all --json > /tmp/diff.json`,
      // The queue's messages are all there after the diff (posixapp dump receives them).
      `${posixapp} dump app | grep '^msg' ; cat /tmp/diff.json`,
    ].join('\n'),
  )
  expect(r.status, r.stderr).toBe(0)
  const text = r.stdout.slice(0, r.stdout.indexOf('{'))
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{')))
  expect(j.schema).toBe('shmkeep.diff')
  const by = Object.fromEntries(j.objects.map((o: { kind: string; key: string }) => [`${o.kind} ${o.key}`, o]))
  expect(Object.fromEntries(Object.entries(by).map(([k, o]: [string, any]) => [k, o.status]))).toEqual({
    [`sem ${A}`]: 'changed',
    [`sem ${B}`]: 'removed',
    [`msg ${A}`]: 'changed',
    [`msg ${B}`]: 'removed',
    'mqueue /app': 'changed',
    'mqueue /other': 'unchanged',
    'posix-shm /app': 'changed',
    'posix-shm /new': 'added',
    'posix-shm /other': 'changed',
    'posix-shm /sem.app': 'changed',
    'posix-shm /sem.other': 'removed',
  })
  // Semaphore values by index (the counter went 1 → 2, the lock is free again).
  expect(by[`sem ${A}`]).toMatchObject({ contents: 'differ', changes: ['values #1 1 → 2'], id: expect.any(Number) })
  expect(by[`msg ${A}`]).toMatchObject({ contents: 'differ', attributes: { qnum: { saved: 1, live: 2 }, cbytes: { saved: 5, live: 10 } } })
  expect(by['posix-shm /app']).toMatchObject({ contents: 'differ', changes: ['contents differ'] })
  expect(by['posix-shm /app'].id).toBeUndefined()
  expect(by['posix-shm /other']).toMatchObject({ contents: 'same', changes: ['mode 600 → 640'] })
  // POSIX queues: attributes only, and it says so.
  expect(by['mqueue /app']).toMatchObject({ attributes: { curmsgs: { saved: 1, live: 2 } }, notCompared: expect.stringMatching(/messages not compared/) })
  expect(by['mqueue /app'].contents).toBeUndefined()
  expect(by['mqueue /other'].notCompared).toMatch(/cannot be read without taking them out/)
  expect(text).toMatch(new RegExp(`changed {3}sem ${A} \\(id \\d+\\): values #1 1 → 2\\n`))
  expect(text).toMatch(/changed {3}mqueue \/app: messages 1 → 2; \(messages not compared: /)
  expect(text).toMatch(/removed {3}posix-shm \/sem\.other\n/)
  // dump received both messages: the diff took none out.
  expect(text).toMatch(/^msg 2 msg 2\nmsg 1 msg 1$/m)
})

test('diff without --kind outside a container leaves /dev/shm alone; a checkpoint-like generation without queues says why they are not compared', async () => {
  const state = stateDir()
  const r = await inContainer(
    [
      `${posixapp} put app >/dev/null; ${semq} put 0x6b030003 >/dev/null`,
      `${sk} snapshot -q -s ${state} --kind shm,sem,msg`,
      `${sk} diff -s ${state} --json`,
    ].join('\n'),
  )
  expect(r.status, r.stderr).toBe(0)
  const j = JSON.parse(r.stdout)
  expect(j.objects.map((o: { kind: string; key: string; status: string }) => `${o.kind} ${o.key} ${o.status}`).sort()).toEqual(['msg 0x6b030003 unchanged', 'sem 0x6b030003 unchanged'])
  expect(j.notes).toEqual([expect.stringMatching(/POSIX message queues not compared: the generation did not look at them/)])
})
