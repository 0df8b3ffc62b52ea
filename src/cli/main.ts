/**
 * The `shmkeep` command: dispatch to one module per subcommand, loaded only
 * when asked for so that `shmkeep run` starts fast.
 */
import { version } from './version'

/** Exit codes of every command (documented in README and `--help`). */
export const EXIT = {
  ok: 0,
  /** Some segment failed (snapshot/restore/verify found a problem). */
  failed: 1,
  /** Bad command line or environment. */
  usage: 2,
} as const

interface Command {
  summary: string
  load(): { run(argv: string[]): Promise<number> }
}

const commands: Record<string, Command> = {}

/** Register a subcommand (each command module is added here as it lands). */
export function register(name: string, command: Command): void {
  commands[name] = command
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
    '  -V, --version  print the version',
    '',
    'Exit codes: 0 ok, 1 a segment failed, 2 usage error (see each command for more).',
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
  if (first === '-V' || first === '--version') {
    process.stdout.write(version + '\n')
    return
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
      process.stderr.write(`shmkeep ${first}: ${e instanceof Error ? e.message : String(e)}\n`)
      process.exitCode = EXIT.failed
    }
  }
}

/** A mistake on the command line: exit code 2 with the command's help hint. */
export class UsageError extends Error {}
