import {dirname, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {Config, settings} from '@oclif/core'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

export interface CommandResult {
  stdout: string
  stderr: string
  exitCode: number
}

let config: Config | undefined

/**
 * Runs one command in this process as `kubectl-selfhost <argv>` would, through oclif (flag
 * parsing, the base class's error handling and exit codes), and captures what it printed.
 */
export async function runCommand(argv: string[]): Promise<CommandResult> {
  // Run the TypeScript sources through tsx (loaded by mocha) and always rediscover the
  // commands, so a stale oclif.manifest.json cannot hide one from the tests.
  settings.enableAutoTranspile = true
  config ??= await Config.load({root: repoRoot, ignoreManifest: true})
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
      exitCode = exit
    }
  } finally {
    process.stdout.write = originalOut
    process.stderr.write = originalErr
  }

  return {stdout: out.join(''), stderr: err.join(''), exitCode}
}
