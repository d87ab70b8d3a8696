import {readFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {Config, Errors, Plugin, settings} from '@oclif/core'
import {execa} from 'execa'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface CommandResult {
  stdout: string
  stderr: string
  exitCode: number
}

let config: Config | undefined

/** The root plugin read from the TypeScript sources in commands/, not from dist/ or a manifest. */
export async function loadSourcePlugin(): Promise<Plugin> {
  settings.enableAutoTranspile = false
  const pjson = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8'))
  pjson.oclif.commands = {...pjson.oclif.commands, target: './commands'}
  const root = new Plugin({root: repoRoot, isRoot: true, ignoreManifest: true, pjson})
  await root.load()
  return root
}

/**
 * Runs one command in this process as `kubectl-selfhost <argv>` would, through oclif (flag
 * parsing, the base class's error handling and exit codes), and captures what it printed.
 */
export async function runCommand(argv: string[]): Promise<CommandResult> {
  if (!config) {
    // Load the TypeScript sources in commands/ (tsx is registered by mocha) instead of dist/,
    // and ignore oclif.manifest.json, so tests never run a stale build or miss a new command.
    const root = await loadSourcePlugin()
    config = await Config.load({root: repoRoot, plugins: new Map([[root.name, root]])})
  }

  const out: string[] = []
  const err: string[] = []
  const originalOut = process.stdout.write.bind(process.stdout)
  const originalErr = process.stderr.write.bind(process.stderr)
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out.push(String(chunk))
    return true
  }) as typeof process.stdout.write
  process.stderr.write = ((chunk: string | Uint8Array) => {
    err.push(String(chunk))
    return true
  }) as typeof process.stderr.write
  let exitCode = 0
  try {
    const [id, ...args] = argv
    await config.runCommand(id, args)
  } catch (error) {
    const exit = (error as {oclif?: {exit?: number}}).oclif?.exit
    if (exit === undefined) {
      err.push(`uncaught: ${(error as Error).stack ?? String(error)}\n`)
      exitCode = 1
    } else {
      // Errors oclif itself raises before a command runs (unknown command) print here, as its handler would.
      if (!(error instanceof Errors.ExitError)) err.push(`${(error as Error).message}\n`)
      exitCode = exit
    }
  } finally {
    process.stdout.write = originalOut
    process.stderr.write = originalErr
  }

  return {stdout: out.join(''), stderr: err.join(''), exitCode}
}

/**
 * Runs the built CLI (bin/run.js) in a process of its own, as a user would, without colour:
 * for what only a real process shows (output flushed before exit, signals). It never rejects:
 * await it for {exitCode, stdout, stderr}, or use the running process. Build first (ensureBuilt).
 */
export function runBuiltCli(args: string[], env: Record<string, string> = {}) {
  return execa(process.execPath, [join(repoRoot, 'bin', 'run.js'), ...args], {env: {...process.env, NO_COLOR: '1', ...env}, reject: false})
}
