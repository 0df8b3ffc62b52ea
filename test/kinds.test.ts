/**
 * The small IPC kinds (semaphore sets, message queues) saved into a packed
 * data file and restored from it: exact attributes, values, message order
 * and types; checksums; all-or-nothing; filters; the policy for semaphore
 * sets a checkpoint saved (a SEM_UNDO lock held during the checkpoint, then
 * SIGKILL).
 *
 * Keys of this file: 0x6b00xxxx. Objects are removed in afterEach.
 */
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, test } from 'vitest'
import { msg, sem } from '../src/index'
import { currentPowers } from '../src/identity'
import { silentLogger } from '../src/log'
import { liveObjects, ObjectDamage, parseKinds, planObjectRestore, readObjects, saveObjects, undoKilledObjects, verifyObjects, type ObjectsSection } from '../src/kinds'
import { dist, tempDir } from './helpers'

const realRoot = process.env.SHMKEEP_TEST_NS === 'ipc' && process.getuid!() === 0
const PREFIX = 0x6b00
const mine = { keys: '0x6b000000-0x6b00ffff' }

let tmp: ReturnType<typeof tempDir>
beforeEach(() => {
  tmp = tempDir()
})
afterEach(() => {
  removeAll()
  tmp.cleanup()
})

function removeAll(): void {
  for (const s of sem.list()) if (s.key >>> 16 === PREFIX) sem.remove(s.id)
  for (const q of msg.list()) if (q.key >>> 16 === PREFIX) msg.remove(q.id)
}

const writer = () => ({ create: (file: string) => fs.openSync(path.join(tmp.dir, file), 'wx', 0o600) })
const powers = () => currentPowers()

function save(options: { checkpoint?: boolean; filter?: object } = {}) {
  const r = saveObjects(writer(), { filter: { ...mine, ...options.filter }, checkpoint: options.checkpoint, powers: powers(), log: silentLogger })
  if (!r.section) throw new Error('nothing saved')
  return { section: r.section, outcomes: r.outcomes }
}

function restore(section: ObjectsSection, options: { semFromCheckpoint?: 'restore' | 'skip'; onConflict?: 'fail' | 'skip' | 'replace'; filter?: object } = {}) {
  const plan = planObjectRestore(tmp.dir, section, { onConflict: options.onConflict ?? 'fail', semFromCheckpoint: options.semFromCheckpoint, filter: options.filter, powers: powers(), log: silentLogger })
  try {
    plan.create()
    plan.finish()
  } catch (e) {
    plan.undo()
    throw e
  }
  return plan
}

/** What the test compares: every attribute that must come back, by key. */
function picture() {
  const sets = sem.list().filter((s) => s.key >>> 16 === PREFIX).sort((a, b) => a.key - b.key)
  const queues = msg.list().filter((q) => q.key >>> 16 === PREFIX).sort((a, b) => a.key - b.key)
  return {
    sets: sets.map((s) => ({ key: s.key, nsems: s.nsems, mode: s.mode, uid: s.uid, gid: s.gid, cuid: s.cuid, cgid: s.cgid, values: sem.values(s.id) })),
    queues: queues.map((q) => ({
      key: q.key,
      mode: q.mode,
      uid: q.uid,
      gid: q.gid,
      cuid: q.cuid,
      cgid: q.cgid,
      qbytes: q.qbytes,
      qnum: q.qnum,
      messages: msg.peekAll(q.id).messages.map((m) => [m.type, m.data.toString('hex')]),
    })),
  }
}

function populate(): void {
  const a = sem.get(0x6b000001, { nsems: 3, create: true, mode: 0o640 })
  sem.setValues(a, [1, 0, 32767])
  const b = sem.get(0x6b000002, { nsems: 1, create: true, mode: 0o600 })
  sem.setValues(b, [5])
  const q = msg.get(0x6b000011, { create: true, mode: 0o620 })
  msg.set(q, { qbytes: 4000 })
  msg.send(q, 3, 'three')
  msg.send(q, 1, Buffer.from([0, 255, 0]))
  msg.send(q, 3, '')
  msg.send(q, 2 ** 40, Buffer.alloc(1000, 0xab))
  msg.get(0x6b000012, { create: true, mode: 0o666 }) // empty queue
}

describe('kinds: save and restore semaphore sets and message queues', () => {
  test('round trip: attributes, values, messages in order with their types', () => {
    populate()
    const before = picture()
    const { section, outcomes } = save()
    expect(outcomes.map((o) => [o.kind, o.key, o.status])).toEqual([
      ['sem', '0x6b000001', 'saved'],
      ['sem', '0x6b000002', 'saved'],
      ['msg', '0x6b000011', 'saved'],
      ['msg', '0x6b000012', 'saved'],
    ])
    expect(section.unsaved).toEqual([])
    expect(section.bytes).toBe(fs.statSync(path.join(tmp.dir, section.data)).size)
    expect(section.limits.sem).toMatchObject({ semvmx: 32767 })
    expect(section.limits.msg).toMatchObject({ msgmax: msg.limits().msgmax })
    expect(verifyObjects(tmp.dir, section)).toMatchObject({ ok: true, objects: 4 })
    removeAll()
    expect(picture()).toEqual({ sets: [], queues: [] })
    const plan = restore(section)
    expect(plan.outcomes.map((o) => o.status)).toEqual(['restored', 'restored', 'restored', 'restored'])
    expect(picture()).toEqual(before)
  })

  test.skipIf(!realRoot)('owners and creators come back; 0600 objects of uid 1000 are read as their owner', () => {
    const s = sem.get(0x6b000021, { nsems: 2, create: true, mode: 0o600, uid: 1000, gid: 1001 })
    sem.setValues(s, [3, 4], { uid: 1000, gid: 1001 })
    sem.set(s, { uid: 1002, gid: 1003, asUid: 1000, asGid: 1001 }) // owner ≠ creator
    const q = msg.get(0x6b000022, { create: true, mode: 0o400, uid: 1000, gid: 1000 })
    msg.set(q, { mode: 0o600, asUid: 1000, asGid: 1000 })
    msg.send(q, 9, 'secret', { uid: 1000, gid: 1000 })
    msg.set(q, { mode: 0o400, asUid: 1000, asGid: 1000 }) // read-only even for its owner
    const before = picture()
    const { section, outcomes } = save()
    expect(outcomes.every((o) => o.status === 'saved')).toBe(true)
    removeAll()
    restore(section)
    expect(picture()).toEqual(before)
    expect(before.sets[0]).toMatchObject({ uid: 1002, gid: 1003, cuid: 1000, cgid: 1001 })
  })

  test('a damaged or truncated data file is refused, naming the object; nothing is created', () => {
    populate()
    const { section } = save()
    removeAll()
    const file = path.join(tmp.dir, section.data)
    const good = fs.readFileSync(file)
    const bad = Buffer.from(good)
    const rec = section.records.find((r) => r.key === '0x6b000011')!
    bad[rec.offset + 20]! ^= 1
    fs.writeFileSync(file, bad)
    expect(() => readObjects(tmp.dir, section)).toThrow(ObjectDamage)
    expect(() => restore(section)).toThrow(/msg 0x6b000011 \(id \d+\): its bytes in objects.data fail their checksum/)
    expect(verifyObjects(tmp.dir, section)).toMatchObject({ ok: false })
    fs.writeFileSync(file, good.subarray(0, good.length - 1))
    expect(() => restore(section)).toThrow(/objects.data is \d+ bytes/)
    fs.rmSync(file)
    expect(() => restore(section)).toThrow(/is missing/)
    expect(picture()).toEqual({ sets: [], queues: [] })
  })

  test('all or nothing: a failure halfway removes every object created', () => {
    populate()
    const { section } = save()
    removeAll()
    const plan = planObjectRestore(tmp.dir, section, { onConflict: 'fail', powers: powers(), log: silentLogger })
    // the third object's key is taken after the plan was made: its msgget fails
    const intruder = msg.get(0x6b000011, { create: true })
    expect(() => plan.create()).toThrow(/msg 0x6b000011 .*EEXIST|File exists/)
    plan.undo()
    expect(plan.outcomes.every((o) => o.status === 'not-restored' && o.id === undefined)).toBe(true)
    expect(sem.list().filter((s) => s.key >>> 16 === PREFIX)).toEqual([])
    expect(msg.list().filter((q) => q.key >>> 16 === PREFIX).map((q) => q.id)).toEqual([intruder])
  })

  test('conflicts: fail names them before anything is created; skip keeps the live object', () => {
    populate()
    const { section } = save()
    const live = picture()
    expect(() => restore(section)).toThrow(/keys have objects here already: semaphore set 0x6b000001/)
    expect(picture()).toEqual(live)
    const plan = restore(section, { onConflict: 'skip' })
    expect(plan.outcomes.every((o) => o.status === 'skipped')).toBe(true)
    expect(picture()).toEqual(live)
  })

  test('filters: --kind and keys, when saving and when restoring', () => {
    populate()
    expect(parseKinds('sem, msg')).toEqual(['sem', 'msg'])
    expect(() => parseKinds('sem,queues')).toThrow(/unknown kind "queues"/)
    expect(saveObjects(writer(), { filter: { ...mine, kinds: ['shm'] }, powers: powers(), log: silentLogger })).toEqual({ section: undefined, outcomes: [] })
    expect(fs.readdirSync(tmp.dir)).toEqual([])
    const onlySem = save({ filter: { kinds: ['sem'] } })
    expect(onlySem.section.kinds).toEqual(['sem'])
    expect(onlySem.section.records.map((r) => r.kind)).toEqual(['sem', 'sem'])
    fs.rmSync(path.join(tmp.dir, 'objects.data'))
    const { section } = save()
    removeAll()
    const plan = restore(section, { filter: { keys: '0x6b000002,0x6b000012' } })
    expect(plan.outcomes.map((o) => o.status)).toEqual(['skipped', 'restored', 'skipped', 'restored'])
    expect(picture().sets.map((s) => s.key)).toEqual([0x6b000002])
    expect(picture().queues.map((q) => q.key)).toEqual([0x6b000012])
    expect(liveObjects({ ...mine, kinds: ['msg'] }).objects.map((o) => [o.kind, o.key])).toEqual([['msg', 0x6b000012]])
  })

  test('objects left by a killed restore are found by key and change time, and removed', () => {
    populate()
    const { section } = save()
    removeAll()
    const startedAt = new Date(Date.now() - 1000).toISOString()
    const plan = planObjectRestore(tmp.dir, section, { onConflict: 'fail', powers: powers(), log: silentLogger })
    plan.create() // "killed" before finish
    const removed = undoKilledObjects({ keys: plan.keys, startedAt }, powers(), silentLogger)
    expect(removed.map((r) => `${r.kind}:${r.key}`).sort()).toEqual(plan.keys.sort())
    expect(picture()).toEqual({ sets: [], queues: [] })
  })
})

describe('semaphore sets saved by a checkpoint (SEM_UNDO lock held, then SIGKILL)', () => {
  test('default skip: the set is not restored; restore: it comes back held, as the lock was', async () => {
    const id = sem.get(0x6b000031, { nsems: 1, create: true, mode: 0o600 })
    sem.setValues(id, [1])
    // A process takes the lock with SEM_UNDO and holds it.
    const holder = spawn(process.execPath, ['-e', `const lib = require(${JSON.stringify(dist)}); if (!lib.sem.op(${id}, [{ num: 0, op: -1, undo: true }])) process.exit(3); console.log('held'); setInterval(() => {}, 1000)`], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on('data', (d) => (String(d).includes('held') ? resolve() : undefined))
      holder.on('exit', (code) => reject(new Error(`holder exited ${code}`)))
    })
    expect(sem.values(id)).toEqual([0])
    const { section } = save({ checkpoint: true })
    expect(section.checkpoint).toBe(true)
    // SIGKILL: the kernel undoes the holder's adjustment in the live set...
    const exited = new Promise((resolve) => holder.on('exit', resolve))
    holder.kill('SIGKILL')
    await exited
    expect(sem.values(id)).toEqual([1])
    // ...but the checkpoint saved it held. A new namespace (the set is gone):
    sem.remove(id)
    const skipped = restore(section)
    expect(skipped.outcomes[0]).toMatchObject({ status: 'skipped', reason: expect.stringMatching(/checkpoint/) })
    expect(sem.list().filter((s) => s.key === 0x6b000031)).toEqual([])
    const restored = restore(section, { semFromCheckpoint: 'restore' })
    expect(restored.outcomes[0]).toMatchObject({ status: 'restored' })
    const back = restored.outcomes[0]!.id!
    expect(sem.values(back)).toEqual([0])
    // the app's next lock would wait forever: nobody holds it to give it back
    expect(sem.op(back, [{ num: 0, op: -1, undo: true }])).toBe(false)
  })

  test('sets saved at a stop are restored whatever the policy', () => {
    const id = sem.get(0x6b000032, { nsems: 2, create: true })
    sem.setValues(id, [1, 2])
    const { section } = save()
    expect(section.checkpoint).toBe(false)
    sem.remove(id)
    const plan = restore(section, { semFromCheckpoint: 'skip' })
    expect(sem.values(plan.outcomes[0]!.id!)).toEqual([1, 2])
  })
})
