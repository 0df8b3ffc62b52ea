/**
 * The addon's job token for one operation (native/job.h): copy workers poll
 * it between chunks, so an abort stops them within a chunk's time instead of
 * at the end of the segment; and they count the bytes they finish in it, so
 * progress moves within a multi-GiB segment.
 */
import type { OperationProgress } from './log'
import { native, type CancelToken } from './native'

/**
 * A token for the workers of one operation: cancelled when `signal` aborts,
 * its count of bytes done followed by `progress` (from startProgress).
 * Undefined with neither: nothing to cancel, nobody to show progress to.
 */
export function cancelTokenFor(signal: AbortSignal | undefined, progress?: OperationProgress): CancelToken | undefined {
  if (!signal && !progress) return undefined
  const token = native.cancelToken()
  if (signal?.aborted) native.cancelCopy(token)
  else signal?.addEventListener('abort', () => native.cancelCopy(token), { once: true })
  progress?.follow(() => native.jobBytes(token))
  return token
}

/** Whether a worker's rejection is its cancel token's doing (ECANCELED from native/job.cc), not a failure of the work. */
export function isCancelled(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { syscall?: unknown }).syscall === 'cancel'
}
