/**
 * shmkeep with exactly Docker's default capabilities (issue 4, "Must hold"):
 * root in a container has no CAP_IPC_OWNER and no CAP_SYS_ADMIN, so it can
 * neither attach another user's 0600 segment directly nor choose ids; it has
 * CAP_SETUID/CAP_SETGID, so it can act as the segment's owner or group.
 *
 * Snapshot and restore run under `setpriv --bounding-set=<Docker's set>
 * --inh-caps=-all` (the `docker` helper of the prelude), each restore in a new
 * IPC namespace; the segments are made by uid 1000 (a real non-root process).
 */
import { afterAll, describe, expect, test } from 'vitest'
import { contents, currentOf, genName, have, identity, realRoot, sorted, Workspace } from './snapkit'

const ws = new Workspace()
afterAll(() => ws.cleanup())

/** Docker's default set as bit numbers (linux/capability.h). */
const DOCKER_CAPS = { chown: 0, dac_override: 1, fowner: 3, fsetid: 4, kill: 5, setgid: 6, setuid: 7, setpcap: 8, net_bind_service: 10, net_raw: 13, sys_chroot: 18, mknod: 27, audit_write: 29, setfcap: 31 }
const DOCKER_MASK = Object.values(DOCKER_CAPS).reduce((m, b) => m | (1n << BigInt(b)), 0n)
const CAP_IPC_OWNER = 15n
const CAP_SYS_ADMIN = 21n

const SK = '"$SK_NODE" "$SK_BIN"'

describe.skipIf(!realRoot || !have('setpriv'))("Docker's default capabilities", () => {
  test('inside: exactly Docker\'s set — no CAP_IPC_OWNER, no CAP_SYS_ADMIN, but CAP_SETUID and CAP_SETGID', () => {
    ws.ns(`
      docker sh -c 'grep -E "^Cap(Eff|Prm|Bnd|Amb|Inh)" /proc/self/status' >"$W/caps.sh.txt"
      docker "$SK_NODE" -e 'process.stdout.write(require("fs").readFileSync("/proc/self/status", "utf8"))' >"$W/caps.node.txt"
    `)
    for (const file of ['caps.sh.txt', 'caps.node.txt']) {
      const text = ws.read(file)!
      const cap = (name: string) => BigInt('0x' + new RegExp(`^${name}:\\s*([0-9a-f]+)$`, 'm').exec(text)![1])
      const eff = cap('CapEff')
      expect(eff, file).toBe(DOCKER_MASK)
      expect(cap('CapBnd'), file).toBe(DOCKER_MASK)
      expect(eff & (1n << CAP_IPC_OWNER), file).toBe(0n)
      expect(eff & (1n << CAP_SYS_ADMIN), file).toBe(0n)
      expect(eff & (1n << 6n) && eff & (1n << 7n), file).toBeTruthy()
    }
  })

  test('segments of uid 1000 (0600, 0060 for a group, 0004 for others, 0400) and other owners are saved and restored exactly, id aside', () => {
    const S = ws.state('docker')
    ws.ns(`
      mkseg -u 1000 -g 1000 0x9000 100000 0600 pat
      mkseg -u 1000 -g 1001 0x9001 5000 0060 pat
      mkseg -u 1000 -g 1000 0x9002 7000 0004 pat
      mkseg -u 1000 -g 1000 0x9003 9000 0400 pat
      mkseg -u 1000 -g 1000 -o 2000:2001 0x9004 4096 0600 pat
      mkseg -o 1000:1000 0x9005 4096 0600 pat
      mkseg 0x9006 4096 0640 pat
      mkseg -u 1000 -g 1000 0x9007 ${4 * 1024 * 1024 + 5} 0600 sparse
      shmdump before; sums before
      step snap docker ${SK} snapshot -s "$S" --json
      inns 'step restore docker ${SK} restore -s "$S" --json; shmdump after; sums after'
    `, { env: { S } })
    const snap = ws.step('snap')
    expect(snap.rc, snap.err).toBe(0)
    expect(snap.json.segments.every((s: any) => s.status === 'saved')).toBe(true)
    const readAs = Object.fromEntries(snap.json.segments.map((s: any) => [s.key, s.readAs]))
    expect(readAs['0x00009000']).toBe('uid 1000 gid 1000')
    expect(readAs['0x00009001']).toMatch(/gid 1001$/)
    expect(readAs['0x00009001']).not.toMatch(/^uid 1000 /) // an owner may not read 0060: read as the group
    const restore = ws.step('restore')
    expect(restore.rc, restore.err).toBe(0)
    // Ids cannot be chosen without CAP_SYS_ADMIN / CAP_CHECKPOINT_RESTORE: said, not hidden.
    expect(restore.json.idsNotKept).toEqual(expect.any(String))
    const before = ws.shm('before')
    const after = ws.shm('after')
    expect(before).toHaveLength(8)
    expect(sorted(after.map((s) => identity(s, false)))).toEqual(sorted(before.map((s) => identity(s, false))))
    const byKey = new Map(after.map((s) => [s.key, s]))
    expect(byKey.get(0x9000)).toMatchObject({ mode: 0o600, uid: 1000, gid: 1000, cuid: 1000, cgid: 1000 })
    expect(byKey.get(0x9001)).toMatchObject({ mode: 0o060, uid: 1000, gid: 1001, cuid: 1000, cgid: 1001 })
    expect(byKey.get(0x9002)).toMatchObject({ mode: 0o004 })
    expect(byKey.get(0x9004)).toMatchObject({ uid: 2000, gid: 2001, cuid: 1000, cgid: 1000 })
    expect(byKey.get(0x9005)).toMatchObject({ uid: 1000, gid: 1000, cuid: 0, cgid: 0 })
    expect(contents(ws.sums('after'))).toEqual(contents(ws.sums('before')))
  })

  test('a 0000 segment beside the app\'s: the app\'s is saved and restored, the 0000 one named with its remedy (exit 4; run 123); --strict: exit 1, nothing written; excluding it or adding IPC_OWNER: exit 0', () => {
    const S = ws.state('docker-0000')
    const R = ws.state('docker-0000-run')
    ws.ns(`
      mkseg -u 1000 -g 1000 0x9100 4096 0600 pat
      step s1 docker ${SK} snapshot -s "$S"
      mkseg -u 1000 -g 1000 0x9101 4096 0000 pat
      sums before
      ls -a "$S" >"$W/before.ls"; find "$S" | sort >"$W/before.find"
      step strict docker ${SK} snapshot -s "$S" --strict --json
      find "$S" | sort >"$W/after-strict.find"
      step s2 docker ${SK} snapshot -s "$S" --json
      cat "$S/CURRENT" >"$W/current-after-s2"
      step gens ${SK} generations -s "$S" --json
      step ins ${SK} inspect -s "$S"
      inns 'step restore docker ${SK} restore -s "$S"; sums restored'
      step s3 docker ${SK} snapshot -s "$S" --exclude-key 0x9101
      step s4 setpriv --bounding-set="$SK_DOCKER,+ipc_owner" --inh-caps=-all ${SK} snapshot -s "$S" --json
      mkdir -m 0700 "$R"; step run docker ${SK} run -s "$R" -- true
    `, { env: { S, R } })
    expect(ws.step('s1').rc, ws.step('s1').err).toBe(0)
    const strict = ws.step('strict')
    expect(strict.rc, strict.err).toBe(1)
    expect(strict.err).toMatch(/--strict, and 1 object\(s\) could not be saved: 0x00009101 \(id 1\)/)
    expect(strict.json).toMatchObject({ generation: null, current: false, outcome: 'failed' })
    expect(ws.read('after-strict.find')).toBe(ws.read('before.find'))
    const s2 = ws.step('s2')
    expect(s2.rc, s2.err).toBe(4)
    expect(s2.err).toMatch(/segment 0x00009101 \(id 1\) NOT saved: mode 0000 lets no identity read it and this process lacks CAP_IPC_OWNER.*mode 0000 lets no one read it, its owner neither: run shmkeep with CAP_IPC_OWNER \(--cap-add IPC_OWNER\), or leave it out on purpose with --exclude-key 0x00009101/)
    expect(s2.json).toMatchObject({ current: true, outcome: 'partial' })
    expect(s2.json.segments.map((s: any) => [s.key, s.status])).toEqual([
      ['0x00009100', 'saved'],
      ['0x00009101', 'unsaved'],
    ])
    expect(s2.json.unsaved).toEqual([expect.objectContaining({ key: '0x00009101', id: 1, size: 4096, mode: 0, uid: 1000, gid: 1000, errno: 'EACCES' })])
    expect(ws.read('current-after-s2')).toBe(`${s2.json.generation}\n`)
    const gen = ws.step('gens').json.generations.find((g: any) => g.name === s2.json.generation)
    expect(gen).toMatchObject({ unsaved: 1, segments: 1 })
    expect(ws.step('ins').out).toMatch(/NOT SAVED: segment 0x00009101 \(id 1, .*mode 0000, owner 1000:1000\): EACCES/)
    const restore = ws.step('restore')
    expect(restore.rc, restore.err).toBe(0)
    expect(restore.err).toMatch(/segment 0x00009101 \(id 1\) is not in gen-\d+: it could not be saved then \(EACCES/)
    expect(contents(ws.sums('restored'))).toEqual(contents(ws.sums('before').filter((s) => s.key === '0x00009100')))
    expect(ws.step('s3').rc, ws.step('s3').err).toBe(0)
    const s4 = ws.step('s4')
    expect(s4.rc, s4.err).toBe(0)
    expect(s4.json.segments.map((s: any) => [s.key, s.status])).toEqual([
      ['0x00009100', 'saved'],
      ['0x00009101', 'saved'],
    ])
    expect(currentOf(S)).toBe(`${s4.json.generation}\n`)
    const run = ws.step('run')
    expect(run.rc, run.err).toBe(123)
    expect(run.err).toMatch(/segment 0x00009101 \(id 1\) NOT saved/)
    expect(run.err).toMatch(/the app's state was not fully kept \(partial\): exit 123 \(the app exited with status 0\)/)
  })

  test('restoring under Docker capabilities a 0000 segment saved with full capabilities: exact, id aside', () => {
    const S = ws.state('docker-restore-0000')
    ws.ns(`
      mkseg -u 1000 -g 1000 0x9200 10000 0000 pat
      mkseg 0x9201 10000 0000 pat
      shmdump before; sums before
      step snap shmkeep snapshot -s "$S"
      inns 'step restore docker ${SK} restore -s "$S"; shmdump after; sums after'
    `, { env: { S } })
    expect(ws.step('snap').rc).toBe(0)
    expect(ws.step('restore').rc, ws.step('restore').err).toBe(0)
    expect(sorted(ws.shm('after').map((s) => identity(s, false)))).toEqual(sorted(ws.shm('before').map((s) => identity(s, false))))
    expect(contents(ws.sums('after'))).toEqual(contents(ws.sums('before')))
  })

  test('an IPC_PRIVATE segment cannot be found again where ids cannot be chosen: restore says why and exits 3; the keyed ones are restored', () => {
    const S = ws.state('docker-private')
    ws.ns(`
      mkseg 0x9300 4096 0600 pat
      mkseg 0 4096 0600 pat
      sums before
      step snap shmkeep snapshot -s "$S"
      inns 'step restore docker ${SK} restore -s "$S" --json; sums after'
    `, { env: { S } })
    const r = ws.step('restore')
    expect(r.rc).toBe(3)
    expect(r.err).toMatch(/segment 0x00000000 \(saved id 1\) not restored: an IPC_PRIVATE segment can only be found again by its id, and ids cannot be kept here/)
    expect(r.json.segments.map((s: any) => s.status)).toEqual(['restored', 'not-restored'])
    expect(contents(ws.sums('after'))).toEqual(contents(ws.sums('before').filter((s) => s.key !== '0x00000000')))
  })
})
