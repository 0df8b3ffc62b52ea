/**
 * The `shmkeep` command: dispatch to one module per subcommand, loaded only
 * when asked for so that `shmkeep run` starts fast.
 */
import { version } from './version'

import { errorLine } from '../log'
import { EXIT, flagWords, UsageError } from './errors'

export { EXIT, UsageError }

interface Command {
  summary: string
  load(): { run(argv: string[]): Promise<number> }
}

/* eslint-disable @typescript-eslint/no-require-imports -- lazy loading keeps `run` fast */
const commands: Record<string, Command> = {
  demo: { summary: 'see what shmkeep does, in a few seconds (needs root and cc)', load: () => require('./demo') },
  run: { summary: 'the container entrypoint: restore, run the app, snapshot at stop', load: () => require('./run') },
  snapshot: { summary: 'save every segment into a new generation of the state dir', load: () => require('./snapshot') },
  adopt: { summary: 'make a generation written beside CURRENT the CURRENT one', load: () => require('./adopt') },
  restore: { summary: 'recreate the segments of the state dir\'s CURRENT generation', load: () => require('./restore') },
  ls: { summary: 'the live segments of this IPC namespace', load: () => require('./ls') },
  generations: { summary: 'list the generations of a state dir', load: () => require('./generations') },
  inspect: { summary: 'the saved metadata of one generation', load: () => require('./inspect') },
  diff: { summary: 'live segments against the CURRENT generation', load: () => require('./diff') },
  prune: { summary: 'remove old generations', load: () => require('./prune') },
  verify: { summary: 'check every chunk of a generation against its checksum', load: () => require('./verify') },
}

function help(): string {
  const names = Object.keys(commands)
  const width = Math.max(8, ...names.map((n) => n.length))
  return [
    `shmkeep ${version} — keep System V shared memory across container restarts`,
    '',
    'Usage: shmkeep <command> [options]',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}  ${commands[n]!.summary}`),
    '',
    'Options:',
    '  -h, --help     show this help (also: shmkeep <command> --help)',
    '  -V, --version  print the version (also after a command)',
    '  -v, --verbose  more detail on stderr (the same as after the command)',
    '',
    'Exit codes: 0 ok, 1 failed, 2 usage error, 3 done only in part (see each command).',
  ].join('\n')
}

/** Run the CLI with these arguments; sets process.exitCode. */
export async function main(argv: string[]): Promise<void> {
  const [first, ...rest] = argv
  if (first === undefined || first === '-h' || first === '--help' || first === 'help') {
    process.stdout.write(help() + '\n')
    process.exitCode = first === undefined ? EXIT.usage : EXIT.ok
    return
  }
  if (first === '-V' || first === '--version' || asksVersion(rest, first)) {
    process.stdout.write(version + '\n')
    return
  }
  // -v means --verbose everywhere, before the command too.
  if (first === '-v' || first === '--verbose') {
    if (rest.length === 0 || !commands[rest[0]!]) {
      process.stderr.write(`shmkeep: ${first} is --verbose and needs a command (the version is -V)\n\n${help()}\n`)
      process.exitCode = EXIT.usage
      return
    }
    return main([rest[0]!, '--verbose', ...rest.slice(1)])
  }
  const command = commands[first]
  if (!command) {
    process.stderr.write(`shmkeep: unknown command "${first}"\n\n${help()}\n`)
    process.exitCode = EXIT.usage
    return
  }
  try {
    process.exitCode = await command.load().run(rest)
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`shmkeep ${first}: ${e.message}\n(see shmkeep ${first} --help)\n`)
      process.exitCode = EXIT.usage
    } else {
      process.stderr.write(`shmkeep ${first}: ${flagWords(errorLine(e))}\n`)
      process.exitCode = EXIT.failed
    }
  }
}

/** `shmkeep CMD … -V`: the version, from any command (not from the app's arguments after `--`). */
function asksVersion(rest: string[], command: string): boolean {
  if (!commands[command]) return false
  const own = rest.indexOf('--') === -1 ? rest : rest.slice(0, rest.indexOf('--'))
  return own.includes('-V') || own.includes('--version')
}
