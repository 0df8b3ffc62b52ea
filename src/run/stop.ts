/**
 * The stop: the pre-stop hooks, the stop signal forwarded, then the app's
 * share of the grace period (the stop timeout) to exit. As PID 1 the whole
 * container stops before the snapshot: the app goes first and stops its own
 * children its own way (a supervisor has its stop signals and order);
 * whatever still runs once it exited (workers outside its group, setsid
 * daemons) gets TERM then. Past the stop timeout, SIGKILL to all of them.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '../log'
import { exitStatus, otherProcesses, type Ending, type Reaper } from './app'
import type { Hooks } from './hooks'
import { describeProcess } from './proc'
import { signalName } from './signals'

export interface Stopped {
  ending: Ending
  /** Something was still running at the stop timeout and got SIGKILL. */
  killed: boolean
}

export interface StopOptions {
  app: number
  reaper: Reaper
  hooks: Hooks
  /** Seconds the app gets once the signal is forwarded. */
  stopTimeout: number
  /** As PID 1: every other process of the container is stopped too. */
  isInit: boolean
  signalGroup?: boolean
  /** Forward the stop signal to the app (rewritten as asked). */
  forward: () => void
  /** Before the signal goes out (pins' scan). */
  beforeSignal: () => void
  log: Logger
}

export async function stopApp(o: StopOptions): Promise<Stopped> {
  const { log, reaper } = o
  await o.hooks.run('pre-stop')
  // The stop timeout is the app's own share of the grace period (the
  // hooks' budgets were taken out of it): it starts now.
  const stopStarted = performance.now()
  o.beforeSignal()
  o.forward()
  const others = () => (o.isInit ? otherProcesses(new Set([o.app]), o.hooks.pids) : [])
  const allGone = (async () => {
    const e = await reaper.ended
    const left = others()
    if (left.length) log.log('info', 'stop', `the app exited; TERM to the processes still running: ${left.map(describeProcess).join(', ')}`)
    for (const pid of left) kill(pid, 'SIGTERM')
    while (others().length) await sleep(20)
    return e
  })()
  const left = Math.max(0, o.stopTimeout * 1000 - (performance.now() - stopStarted))
  const r = await Promise.race([allGone, sleep(left, 'timeout' as const)])
  if (r !== 'timeout') return { ending: r, killed: false }

  const appRunning = reaper.ending === undefined
  // Named before they die: a reaped pid has no command line left to show.
  const running = [...(appRunning ? [o.app] : []), ...others()].map(describeProcess)
  kill(o.signalGroup ? -o.app : o.app, 'SIGKILL')
  for (const pid of others()) kill(pid, 'SIGKILL')
  const ending = await reaper.ended
  for (let i = 0; i < 100 && others().length; i++) await sleep(10)
  // One line: who got SIGKILL, and what that made of the app's status.
  const status = exitStatus(ending)
  const app = appRunning
    ? `the app ${'signal' in ending ? `ended with status ${status} (${signalName(ending.signal)})` : `exited with status ${status} before the SIGKILL reached it`}`
    : `the app had exited already (status ${status})`
  log.log('warn', 'stop', `still running after ${o.stopTimeout.toFixed(1)} s, killed with SIGKILL: ${running.join(', ')}; ${app}`, { killed: running, status })
  return { ending, killed: true }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal)
  } catch {
    // gone already
  }
}
