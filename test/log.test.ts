/** The log's one formatter for sizes, rates and durations (src/log.ts), and its JSON lines carrying exact numbers. */
import { describe, expect, test } from 'vitest'
import { humanDuration, humanRate, humanSize, streamLogger } from '../src/log'

describe('sizes for people in text, exact bytes in fields', () => {
  test('humanSize: bytes below 1 KiB as they are, then binary units with one decimal', () => {
    expect(humanSize(0)).toBe('0 B')
    expect(humanSize(1023)).toBe('1023 B')
    expect(humanSize(4096)).toBe('4.0 KiB')
    expect(humanSize(256 * 2 ** 20)).toBe('256.0 MiB')
    expect(humanSize(1.5 * 2 ** 30)).toBe('1.5 GiB')
    expect(humanSize(3 * 2 ** 40)).toBe('3.0 TiB')
  })

  test('humanRate and humanDuration', () => {
    expect(humanRate(300 * 2 ** 20)).toBe('300.0 MiB/s')
    expect(humanDuration(850.4)).toBe('850 ms')
    expect(humanDuration(4200)).toBe('4.2 s')
    expect(humanDuration(185_000)).toBe('3 min 05 s')
    expect(humanDuration(3_720_000)).toBe('1 h 02 min')
  })

  test('a JSON log line keeps the exact byte count of its fields', () => {
    const lines: string[] = []
    const log = streamLogger({ format: 'json', write: (l) => lines.push(l) })
    log.log('info', 'snapshot', `snapshot: ${humanSize(123_456_789)}`, { bytes: 123_456_789 })
    const rec = JSON.parse(lines[0]!)
    expect(rec.bytes).toBe(123_456_789)
    expect(rec.msg).toBe('snapshot: 117.7 MiB')
  })
})
