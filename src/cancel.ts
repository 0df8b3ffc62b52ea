/**
 * An AbortSignal as the addon's cancel token: copy workers poll the token
 * between chunks (native/job.cc), so an abort stops them within a chunk's
 * time instead of at the end of the segment.
 */
import { native, type CancelToken } from './native'

/** A token that is cancelled when `signal` aborts (undefined without a signal). */
export function cancelTokenFor(signal: AbortSignal | undefined): CancelToken | undefined {
  if (!signal) return undefined
  const token = native.cancelToken()
  if (signal.aborted) native.cancelCopy(token)
  else signal.addEventListener('abort', () => native.cancelCopy(token), { once: true })
  return token
}

/** Whether a worker's rejection is its cancel token's doing (ECANCELED from native/job.cc), not a failure of the work. */
export function isCancelled(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { syscall?: unknown }).syscall === 'cancel'
}
