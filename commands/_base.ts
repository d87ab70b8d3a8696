import {Command} from '@oclif/core/command'
import * as Errors from '@oclif/core/errors'
import * as Flags from '@oclif/core/flags'
import type * as Interfaces from '@oclif/core/interfaces'

import {CliError, ExitCode} from '../src/errors.js'
import {parseDuration} from '../src/duration.js'
import type {KubeClient} from '../src/kube/client.js'
import {OutputFormat, configureColour, parseOutputFormat} from '../src/render/output.js'

/** Flags every command that talks to a cluster shares, named as kubectl names them. */
export const clusterFlags = {
  kubeconfig: Flags.string({description: 'path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config)', helpGroup: 'CLUSTER'}),
  context: Flags.string({description: 'kubeconfig context to use', helpGroup: 'CLUSTER'}),
  'request-timeout': Flags.string({description: 'time to wait for each API request (e.g. 30s, 1m; 0 = no limit)', default: '30s', helpGroup: 'CLUSTER'}),
  verbose: Flags.boolean({char: 'v', description: 'print stack traces and details of failures', helpGroup: 'GLOBAL'}),
}

export const outputFlag = (formats: readonly OutputFormat[] = ['table', 'wide', 'json', 'yaml']) =>
  Flags.string({char: 'o', description: `output format: ${formats.join('|')}`, options: [...formats], default: 'table'})

export type ClusterFlagValues = {kubeconfig?: string; context?: string; 'request-timeout': string; namespace?: string}

/**
 * The base of every command: one place that connects to the cluster and one place that
 * turns failures into a single line and an exit code.
 */
export abstract class SelfhostCommand extends Command {
  protected verbose = process.argv.includes('-v') || process.argv.includes('--verbose') || Boolean(process.env.DEBUG)

  public async init(): Promise<void> {
    configureColour()
    await super.init()
  }

  protected async connect(flags: ClusterFlagValues): Promise<KubeClient> {
    const {KubeClient} = await import('../src/kube/client.js')
    return KubeClient.connect({
      kubeconfig: flags.kubeconfig,
      context: flags.context,
      namespace: flags.namespace,
      requestTimeoutMs: parseDuration(flags['request-timeout'], '--request-timeout'),
    })
  }

  /**
   * Runs a mutating command's work with its steps shown as they happen: a live view on a
   * terminal, plain lines on stderr otherwise (stdout stays for the result and -o json|yaml).
   */
  protected async withProgress<T>(work: (step: (line: string) => void) => Promise<T>): Promise<T> {
    const {startProgress} = await import('../src/render/progress.js')
    const progress = await startProgress()
    try {
      return await work((line) => progress.step(line))
    } finally {
      progress.stop()
    }
  }

  /**
   * Runs work that Ctrl-C (SIGINT) or SIGTERM should stop gently rather than kill: the signal
   * aborts the AbortSignal the work is given (reason: an Error "interrupted"), and the work
   * decides what stopping means (end a log stream, roll an upgrade back). The handlers are
   * once-only, so a second Ctrl-C kills as usual. `stop` aborts the same way from inside.
   */
  protected async withInterrupt<T>(work: (signal: AbortSignal, stop: () => void) => Promise<T>): Promise<T> {
    const controller = new AbortController()
    const stop = () => controller.abort(new Error('interrupted'))
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    try {
      return await work(controller.signal, stop)
    } finally {
      process.removeListener('SIGINT', stop)
      process.removeListener('SIGTERM', stop)
    }
  }

  protected outputFormat(value: string | undefined, allowed?: readonly OutputFormat[]): OutputFormat {
    return parseOutputFormat(value, allowed)
  }

  public async catch(err: Error & {exitCode?: number; oclif?: {exit?: number}}): Promise<unknown> {
    if (err instanceof Errors.ExitError) throw err
    if (this.verbose && err.stack) process.stderr.write(`${err.stack}\n`)
    const message = err instanceof CliError ? err.message : oneLine(err.message || String(err))
    process.stderr.write(`error: ${message}\n`)
    const code = err instanceof CliError ? err.exitCode : ExitCode.error
    return this.exit(code)
  }
}

/**
 * oclif's parse errors span lines ("The following error occurred:", the problem, "See more
 * help with --help"): keep the lines that say what is wrong, on one line.
 */
function oneLine(message: string): string {
  const lines = message
    .split('\n')
    .map((line) => line.trim().replace(/\s+/g, ' '))
    .filter((line) => line && line !== 'The following error occurred:' && !/^See more help with --help/.test(line))
  return lines.length > 0 ? `${lines.join(' ')}${/--help/.test(message) ? ' (see --help)' : ''}` : message
}

export type InferredFlags<T extends typeof Command> = Interfaces.InferredFlags<T['flags']>
