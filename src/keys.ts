/**
 * SysV keys. `key_t` is a signed 32-bit int in C; in this API a key is the
 * unsigned value 0..0xFFFFFFFF, given as a number or a string ("0x162e",
 * "5678"), and printed as `0x%08x` the way ipcs prints it.
 *
 * The one rule for negative keys: −2³¹…−1 are accepted everywhere keys are
 * (numbers and strings alike) as the two's complement of 0x80000000…0xffffffff,
 * because that is how C code and /proc/sysvipc/* print a key_t above
 * 0x7fffffff (0xdeadbeef is −559038737). So −1 is the key 0xffffffff. Below
 * −2³¹ or above 0xffffffff is a RangeError.
 */

/** The key that asks shmget for a new segment no key can find again. */
export const IPC_PRIVATE = 0

/** A key as a number or a string such as "0x162e" or "5678". */
export type KeyLike = number | string

/** Parse a key; TypeError/RangeError for anything that is not one. */
export function parseKey(key: KeyLike): number {
  let n: number
  if (typeof key === 'number') {
    n = key
  } else if (typeof key === 'string') {
    const s = key.trim()
    if (/^0x[0-9a-f]+$/i.test(s)) n = parseInt(s.slice(2), 16)
    else if (/^[0-9]+$/.test(s)) n = parseInt(s, 10)
    else if (/^-[0-9]+$/.test(s)) n = parseInt(s, 10)
    else throw new TypeError(`not a key: ${JSON.stringify(key)} (expected a number or a string like "0x162e")`)
  } else {
    throw new TypeError(`not a key: ${typeof key} (expected a number or a string like "0x162e")`)
  }
  if (!Number.isInteger(n)) throw new TypeError(`not a key: ${String(key)} (not an integer)`)
  // A negative key is what C code prints for key_t values above 0x7fffffff.
  if (n < 0 && n >= -0x80000000) n += 0x100000000
  if (n < 0 || n > 0xffffffff) throw new RangeError(`key ${String(key)} is outside 32 bits (0..0xffffffff, or -0x80000000..-1 as two's complement)`)
  return n
}

/** `0x0000162e`, the way ipcs prints keys. */
export function formatKey(key: number): string {
  return '0x' + (key >>> 0).toString(16).padStart(8, '0')
}

/**
 * A set of keys: numbers, and strings holding comma-separated keys and
 * inclusive ranges, e.g. `0x162e,0x1000-0x1fff` (as on a command line).
 */
export class KeyRanges {
  readonly ranges: ReadonlyArray<readonly [number, number]>
  constructor(spec: KeyLike | KeyLike[]) {
    const items: KeyLike[] = Array.isArray(spec) ? spec : [spec]
    const parts = items.flatMap((s): KeyLike[] => (typeof s === 'string' ? s.split(',').map((p) => p.trim()).filter(Boolean) : [s]))
    if (parts.length === 0) throw new TypeError('empty key list')
    this.ranges = parts.map((p) => {
      if (typeof p !== 'string') {
        const k = parseKey(p)
        return [k, k] as const
      }
      const m = /^(.+?)-(.+)$/.exec(p)
      if (m && !p.startsWith('-')) {
        const lo = parseKey(m[1]!)
        const hi = parseKey(m[2]!)
        if (lo > hi) throw new RangeError(`key range ${p} runs backwards`)
        return [lo, hi] as const
      }
      const k = parseKey(p)
      return [k, k] as const
    })
  }
  has(key: number): boolean {
    return this.ranges.some(([lo, hi]) => key >= lo && key <= hi)
  }
}
