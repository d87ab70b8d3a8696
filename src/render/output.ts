import chalk from 'chalk'

import {CliError} from '../errors.js'

export const OUTPUT_FORMATS = ['table', 'wide', 'json', 'yaml'] as const
export type OutputFormat = (typeof OUTPUT_FORMATS)[number]

/** Colour only for a person at a terminal: never in pipes, files, or with NO_COLOR set. */
export function configureColour(stream: NodeJS.WriteStream = process.stdout, env: NodeJS.ProcessEnv = process.env): void {
  if ('NO_COLOR' in env || !stream.isTTY) chalk.level = 0
}

export function parseOutputFormat(value: string | undefined, allowed: readonly OutputFormat[] = OUTPUT_FORMATS): OutputFormat {
  const format = (value ?? 'table') as OutputFormat
  if (!allowed.includes(format)) {
    throw new CliError(`output format "${value}" is not supported here; use one of: ${allowed.join(', ')}`)
  }

  return format
}

/**
 * Machine output prints the very result object the human view is drawn from, so the two
 * never drift apart. The YAML library is loaded only for YAML: every command imports this
 * module, and evaluating the library's 70-odd modules on each start cost more than the commands
 * that never print YAML should pay (trace --from-file never reads YAML either).
 */
export async function renderData(result: unknown, format: 'json' | 'yaml'): Promise<string> {
  if (format === 'json') return JSON.stringify(result, null, 2)
  const {stringify} = await import('yaml')
  return stringify(result, {aliasDuplicateObjects: false}).trimEnd()
}

export function isMachineFormat(format: OutputFormat): format is 'json' | 'yaml' {
  return format === 'json' || format === 'yaml'
}
