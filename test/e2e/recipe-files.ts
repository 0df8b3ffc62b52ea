/**
 * Reading the recipe files the way their tools do, offline: a Dockerfile's
 * instructions (exec-form JSON or shell form, ENV, VOLUME), YAML through
 * python3's PyYAML (Debian's python3-yaml; installed with apt-get when it is
 * missing and can be), and supervisord's ini.
 */
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { aptInstall } from './runc'

export interface Instruction {
  /** Upper-case: FROM, RUN, ENTRYPOINT, ... */
  op: string
  /** The rest of the line, continuation lines joined. */
  rest: string
  line: number
}

/** Every instruction of a Dockerfile (comments and blank lines dropped, `\` continuations joined). */
export function dockerfileInstructions(file: string): Instruction[] {
  const out: Instruction[] = []
  const lines = fs.readFileSync(file, 'utf8').split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let text = lines[i]!
    if (/^\s*(#|$)/.test(text)) continue
    while (/\\\s*$/.test(text) && i + 1 < lines.length) {
      text = text.replace(/\\\s*$/, ' ')
      i++
      while (i < lines.length - 1 && /^\s*#/.test(lines[i]!)) i++ // comment lines inside a continuation are dropped
      text += lines[i]!
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(text)
    if (!m) throw new Error(`${file}:${start + 1}: not an instruction: ${text}`)
    out.push({ op: m[1]!.toUpperCase(), rest: m[2]!.trim(), line: start + 1 })
  }
  return out
}

/** The exec form's argv, or undefined for the shell form. */
export function execForm(rest: string): string[] | undefined {
  if (!rest.startsWith('[')) return undefined
  const v = JSON.parse(rest) as unknown
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`not a JSON array of strings: ${rest}`)
  return v
}

export interface Image {
  entrypoint?: string[]
  cmd?: string[]
  env: Record<string, string>
  volumes: string[]
  /** Instructions of the final stage, for other checks. */
  instructions: Instruction[]
  /** ENTRYPOINT/CMD lines in shell form (Docker would run them under /bin/sh -c). */
  shellForm: Instruction[]
}

/** What the final stage of a Dockerfile configures. */
export function dockerImage(file: string): Image {
  const all = dockerfileInstructions(file)
  const from = all.map((x, i) => (x.op === 'FROM' ? i : -1)).filter((i) => i >= 0)
  const stage = all.slice(from.at(-1) ?? 0)
  const img: Image = { env: {}, volumes: [], instructions: stage, shellForm: [] }
  for (const x of stage) {
    if (x.op === 'ENTRYPOINT' || x.op === 'CMD') {
      const argv = execForm(x.rest)
      if (!argv) {
        img.shellForm.push(x)
        continue
      }
      if (x.op === 'ENTRYPOINT') img.entrypoint = argv
      else img.cmd = argv
    } else if (x.op === 'ENV') {
      // ENV K=V [K2=V2 ...] (values may be double-quoted) or the old ENV K V
      if (!x.rest.includes('=')) {
        const [k, ...v] = x.rest.split(/\s+/)
        img.env[k!] = v.join(' ')
      } else {
        for (const m of x.rest.matchAll(/(\w+)=("(?:[^"\\]|\\.)*"|\S*)/g)) img.env[m[1]!] = m[2]!.startsWith('"') ? JSON.parse(m[2]!) : m[2]!
      }
    } else if (x.op === 'VOLUME') {
      img.volumes.push(...(execForm(x.rest) ?? x.rest.split(/\s+/)))
    }
  }
  return img
}

let yamlPython: string | undefined | null = null
let yamlProblem = ''

/** A python3 that has PyYAML (installing Debian's python3-yaml if needed), or why there is none. */
export function yamlLoader(): { python?: string; problem?: string } {
  if (yamlPython === null) {
    const has = (py: string) => spawnSync(py, ['-c', 'import yaml'], { stdio: 'ignore' }).status === 0
    yamlPython = ['python3', '/usr/bin/python3'].find(has)
    if (!yamlPython) {
      const why = aptInstall('python3-yaml')
      yamlPython = ['/usr/bin/python3', 'python3'].find(has)
      if (!yamlPython) yamlProblem = `no python3 with PyYAML (python3 -c 'import yaml' fails) and Debian's python3-yaml could not be installed: ${why}`
    }
  }
  return yamlPython ? { python: yamlPython } : { problem: yamlProblem }
}

/** Every document of a YAML file, parsed by PyYAML's safe loader (throws with its message on a syntax error). */
export function loadYamlAll(file: string): any[] {
  const { python, problem } = yamlLoader()
  if (!python) throw new Error(problem)
  const r = spawnSync(python, ['-c', 'import sys, json, yaml\nprint(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))', file], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${file} is not valid YAML: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** supervisord's ini: sections → key → value (`;` comments dropped). */
export function readIni(file: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {}
  let section: Record<string, string> | undefined
  for (const raw of fs.readFileSync(file, 'utf8').split('\n')) {
    const line = raw.replace(/(^|\s);.*$/, '').trim()
    if (!line) continue
    const s = /^\[(.+)\]$/.exec(line)
    if (s) {
      section = out[s[1]!] = {}
      continue
    }
    const kv = /^([\w.]+)\s*=\s*(.*)$/.exec(line)
    if (!kv || !section) throw new Error(`${file}: not ini: ${raw}`)
    section[kv[1]!] = kv[2]!
  }
  return out
}

/** Docker's duration strings as compose takes them: "30s", "1m30s", "1500ms" → seconds. */
export function composeDuration(text: string | number): number {
  if (typeof text === 'number') return text
  let total = 0
  const re = /(\d+(?:\.\d+)?)(ms|us|h|m|s)/g
  let consumed = ''
  for (const m of text.matchAll(re)) {
    const n = Number(m[1])
    total += m[2] === 'h' ? n * 3600 : m[2] === 'm' ? n * 60 : m[2] === 's' ? n : m[2] === 'ms' ? n / 1000 : n / 1e6
    consumed += m[0]
  }
  if (consumed !== text) throw new Error(`not a compose duration: ${text}`)
  return total
}
