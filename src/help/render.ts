/**
 * Help (and the unknown-command error) drawn from oclif.manifest.json alone. Loading @oclif/core costs more than starting
 * node itself, so `--help` (and `help`) never load it: bin/run.js answers help from the
 * manifest and hands everything else to oclif. This module must stay dependency-free at run time (its one
 * import, the word wrap, imports nothing; oclif's types are erased).
 */

import type {Interfaces} from '@oclif/core'

import {wrapWords} from '../render/wrap.js'

// oclif's own manifest types: a type-only import, erased from the JavaScript, so help still never loads @oclif/core.
export type HelpManifest = Pick<Interfaces.Manifest, 'commands'>
export type HelpCommand = HelpManifest['commands'][string]
type HelpFlag = HelpCommand['flags'][string]

export interface HelpContext {
  bin: string
  version: string
  description?: string
  /** `<bin>/<version> <platform>-<arch> node-<version>`, as oclif prints it. */
  userAgent: string
  width: number
}

/** What argv asks of this module: the root help, one command's help, or a command that does not exist. */
export type HelpRequest = {kind: 'root'} | {kind: 'command'; command: HelpCommand} | {kind: 'unknown'; word: string}

function findCommand(manifest: HelpManifest, word: string): HelpCommand | undefined {
  const commands = Object.values(manifest.commands)
  return commands.find((c) => c.id === word) ?? commands.find((c) => c.aliases?.includes(word))
}

/**
 * Decides whether argv asks for something this module answers: help, or a command that does
 * not exist (one line, like every other error). Undefined means "let oclif run it".
 */
export function helpRequest(manifest: HelpManifest, argv: string[]): HelpRequest | undefined {
  const end = argv.indexOf('--')
  const words = end >= 0 ? argv.slice(0, end) : argv
  const asksHelp = words.includes('--help') || words.includes('-h')
  if (words.length === 0) return {kind: 'root'}
  if (words[0] === 'help') {
    if (words.length === 1) return {kind: 'root'}
    const command = findCommand(manifest, words[1])
    return command ? {kind: 'command', command} : {kind: 'unknown', word: words[1]}
  }

  if (words[0].startsWith('-')) return asksHelp ? {kind: 'root'} : undefined
  const command = findCommand(manifest, words[0])
  if (!command) return {kind: 'unknown', word: words[0]}
  return asksHelp ? {kind: 'command', command} : undefined
}

/** The one line for a command that does not exist, naming the ones that do. */
export function unknownCommandLine(manifest: HelpManifest, word: string): string {
  const known = Object.values(manifest.commands)
    .filter((c) => !c.hidden)
    .flatMap((c) => [c.id, ...(c.aliases ?? [])])
    .sort()
  return `error: unknown command "${word}"; commands: ${known.join(', ')}`
}

/** Wraps text to a width, keeping the text's own line breaks. */
function wrap(text: string, width: number, indent: number): string[] {
  const out: string[] = []
  const room = Math.max(20, width - indent)
  for (const paragraph of text.split('\n')) out.push(...wrapWords(paragraph.split(/\s+/).filter(Boolean), room))
  return out.map((l) => (l ? ' '.repeat(indent) + l : l))
}

/** Two columns: names padded to the widest, text wrapped beside them. */
function columns(rows: Array<[string, string]>, width: number): string[] {
  const nameWidth = Math.max(...rows.map(([name]) => name.length))
  const lines: string[] = []
  for (const [name, text] of rows) {
    const indent = 2 + nameWidth + 2
    const wrapped = wrap(text, width, indent)
    const first = (wrapped[0] ?? '').trimStart()
    lines.push(`  ${name.padEnd(nameWidth)}  ${first}`.trimEnd(), ...wrapped.slice(1))
  }

  return lines
}

const firstLine = (text?: string) => (text ?? '').split('\n')[0].trim()

function flagName(flag: HelpFlag): string {
  const long = flag.type === 'option' ? `--${flag.name}=<${flag.options ? 'option' : 'value'}>` : `--${flag.name}`
  return flag.char ? `-${flag.char}, ${long}` : long
}

function flagText(flag: HelpFlag): string {
  const parts: string[] = []
  if (flag.default !== undefined && flag.default !== false) parts.push(`[default: ${String(flag.default)}]`)
  parts.push(flag.summary ?? flag.description ?? '')
  let text = parts.join(' ').trim()
  if (flag.type === 'option' && flag.options) text += `\n<options: ${flag.options.join('|')}>`
  return text
}

function usage(ctx: HelpContext, command: HelpCommand): string {
  const args = Object.values(command.args).map((a) => (a.required ? a.name.toUpperCase() : `[${a.name.toUpperCase()}]`))
  const hasFlags = Object.values(command.flags).some((f) => !f.hidden)
  return [`$ ${ctx.bin} ${command.id}`, ...args, ...(hasFlags ? ['[FLAGS]'] : [])].join(' ')
}

function exampleText(ctx: HelpContext, example: HelpCommand['examples'] extends Array<infer E> | undefined ? E : never): string[] {
  const fill = (text: string) => text.replace(/<%= config\.bin %>/g, ctx.bin)
  if (typeof example === 'string') return [`  $ ${fill(example)}`]
  return [...(example.description ? [`  ${fill(example.description)}`, ''] : []), `    $ ${fill(example.command)}`]
}

export function renderCommandHelp(ctx: HelpContext, command: HelpCommand): string {
  const sections: string[][] = []
  const summary = command.summary ?? firstLine(command.description)
  if (summary) sections.push(wrap(summary, ctx.width, 0))
  sections.push(['USAGE', `  ${usage(ctx, command)}`])

  const args = Object.values(command.args)
  if (args.length > 0) {
    const rows = args.map((a): [string, string] => [a.name.toUpperCase(), [a.description ?? '', a.options ? `(${a.options.join('|')})` : ''].join(' ').trim()])
    sections.push(['ARGUMENTS', ...columns(rows, ctx.width)])
  }

  const groups = new Map<string, HelpFlag[]>()
  for (const flag of Object.values(command.flags)) {
    if (flag.hidden) continue
    const group = flag.helpGroup ? `${flag.helpGroup.toUpperCase()} FLAGS` : 'FLAGS'
    groups.set(group, [...(groups.get(group) ?? []), flag])
  }

  const order = [...groups.keys()].sort((a, b) => (a === 'FLAGS' ? -1 : b === 'FLAGS' ? 1 : a.localeCompare(b)))
  for (const group of order) {
    const flags = groups.get(group)!.sort((a, b) => Number(!a.char) - Number(!b.char) || a.name.localeCompare(b.name))
    sections.push([
      group,
      ...columns(
        flags.map((f) => [flagName(f), flagText(f)]),
        ctx.width,
      ),
    ])
  }

  if (command.description && command.description !== summary) sections.push(['DESCRIPTION', ...wrap(command.description, ctx.width, 2)])
  if (command.aliases?.length) sections.push(['ALIASES', ...command.aliases.map((a) => `  $ ${ctx.bin} ${a}`)])
  if (command.examples?.length) sections.push(['EXAMPLES', ...command.examples.flatMap((e, i) => [...(i > 0 ? [''] : []), ...exampleText(ctx, e)])])
  return sections.map((s) => s.join('\n')).join('\n\n')
}

export function renderRootHelp(ctx: HelpContext, manifest: HelpManifest): string {
  const commands = Object.values(manifest.commands).filter((c) => !c.hidden)
  const rows = commands
    .flatMap((c): Array<[string, string]> => [
      [c.id, c.summary ?? firstLine(c.description)],
      ...(c.aliases ?? []).map((a): [string, string] => [a, `alias of ${c.id}`]),
    ])
    .sort(([a], [b]) => a.localeCompare(b))
  const sections = [
    ...(ctx.description ? [wrap(ctx.description, ctx.width, 0)] : []),
    ['VERSION', `  ${ctx.userAgent}`],
    ['USAGE', `  $ ${ctx.bin} [COMMAND]`],
    ['COMMANDS', ...columns(rows, ctx.width)],
    wrap(`Run \`${ctx.bin} COMMAND --help\` for a command's flags; kubectl users type \`kubectl selfhost COMMAND\`.`, ctx.width, 0),
  ]
  return sections.map((s) => s.join('\n')).join('\n\n')
}

export function renderHelp(ctx: HelpContext, manifest: HelpManifest, request: Exclude<HelpRequest, {kind: 'unknown'}>): string {
  return request.kind === 'root' ? renderRootHelp(ctx, manifest) : renderCommandHelp(ctx, request.command)
}
