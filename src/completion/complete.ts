/**
 * Shell completion without loading oclif: everything comes from oclif.manifest.json, so a
 * TAB costs little more than starting node. One completer serves both kubectl's plugin
 * protocol (kubectl >= 1.26 runs `kubectl_complete-selfhost <args...> <partial>`) and the
 * scripts `kubectl-selfhost completion bash|zsh` prints.
 */
import type {Interfaces} from '@oclif/core'

import {flagValue} from '../controlplane/container.js'
import {CONTROL_PLANE_COMPONENTS, PIVOTED_COMPONENTS} from '../controlplane/model.js'

/** cobra's ShellCompDirective bits, which kubectl and the scripts read from the last line. */
export const Directive = {
  default: 0,
  error: 1,
  noSpace: 2,
  noFileComp: 4,
  filterFileExt: 8,
  filterDirs: 16,
  keepOrder: 32,
} as const

// oclif's own manifest types: a type-only import, erased from the JavaScript, so a TAB never loads @oclif/core.
export type Manifest = Pick<Interfaces.Manifest, 'commands'>
type ManifestCommand = Manifest['commands'][string]
type ManifestFlag = ManifestCommand['flags'][string]

export interface Completion {
  /** `value` or `value<TAB>description`, one per line. */
  candidates: string[]
  directive: number
}

export interface CompletionSources {
  /** Context names of the kubeconfig in use (read only when completing --context). */
  contexts?: (kubeconfig: string | undefined) => Promise<string[]>
}

/** Which components a command's `component` argument takes. */
const COMPONENT_ARGS: Record<string, readonly string[]> = {scale: PIVOTED_COMPONENTS}
/** Flags whose value is a file or a directory: let the shell complete paths. */
const FILE_FLAGS = new Set(['kubeconfig'])
const DIR_FLAGS = new Set(['from-dir', 'backup-dir'])

const firstLine = (text: string | undefined) => (text ?? '').split('\n')[0].trim()
const withDescription = (value: string, description?: string) => (description ? `${value}\t${firstLine(description)}` : value)

function findCommand(manifest: Manifest, word: string): ManifestCommand | undefined {
  const commands = Object.values(manifest.commands)
  return commands.find((c) => c.id === word) ?? commands.find((c) => c.aliases?.includes(word))
}

function findFlag(command: ManifestCommand, word: string): ManifestFlag | undefined {
  const flags = Object.values(command.flags)
  if (word.startsWith('--')) return flags.find((f) => f.name === word.slice(2))
  if (/^-[^-]$/.test(word)) return flags.find((f) => f.char === word.slice(1))
  return undefined
}

/** Words after the command that are positional arguments (not flags, not flag values). */
function positionals(command: ManifestCommand, words: string[]): string[] {
  const found: string[] = []
  for (let i = 0; i < words.length; i++) {
    const word = words[i]
    if (word === '--') return [...found, ...words.slice(i + 1)]
    if (!word.startsWith('-') || word === '-') {
      found.push(word)
      continue
    }

    const flag = findFlag(command, word)
    if (flag?.type === 'option' && !word.includes('=')) i++
  }

  return found
}

async function completeFlagValue(
  command: ManifestCommand,
  flag: ManifestFlag,
  partial: string,
  before: string[],
  sources: CompletionSources,
  prefix = '',
): Promise<Completion> {
  if (flag.type === 'option' && flag.options) {
    return {candidates: flag.options.filter((o) => o.startsWith(partial)).map((o) => prefix + o), directive: Directive.noFileComp}
  }

  if (flag.name === 'context' && sources.contexts) {
    const contexts = await sources.contexts(flagValue(before, 'kubeconfig'))
    return {candidates: contexts.filter((c) => c.startsWith(partial)).map((c) => prefix + c), directive: Directive.noFileComp}
  }

  if (FILE_FLAGS.has(flag.name)) return {candidates: [], directive: Directive.default}
  if (DIR_FLAGS.has(flag.name)) return {candidates: [], directive: Directive.filterDirs}
  return {candidates: [], directive: Directive.noFileComp}
}

/**
 * Completes the last word of `words` (the words typed after `kubectl selfhost` or
 * `kubectl-selfhost`, the last one being the partial word under the cursor, maybe "").
 */
export async function complete(manifest: Manifest, words: string[], sources: CompletionSources = {}): Promise<Completion> {
  const partial = words.at(-1) ?? ''
  const before = words.slice(0, -1)
  const visible = Object.values(manifest.commands).filter((c) => !c.hidden)

  if (before.length === 0) {
    if (partial.startsWith('-')) {
      return {candidates: ['--help', '--version'].filter((f) => f.startsWith(partial)), directive: Directive.noFileComp}
    }

    const names = visible.flatMap((c) => [
      withDescription(c.id, c.summary ?? c.description),
      ...(c.aliases ?? []).map((a) => withDescription(a, `alias of ${c.id}`)),
    ])
    return {candidates: names.filter((n) => n.startsWith(partial)).sort(), directive: Directive.noFileComp}
  }

  const command = findCommand(manifest, before[0])
  if (!command) return {candidates: [], directive: Directive.noFileComp}
  const afterCommand = before.slice(1)

  const previous = afterCommand.at(-1)
  const previousFlag = previous && !previous.includes('=') ? findFlag(command, previous) : undefined
  if (previousFlag?.type === 'option') return completeFlagValue(command, previousFlag, partial, afterCommand, sources)

  if (partial.startsWith('--') && partial.includes('=')) {
    const [name, value] = [partial.slice(0, partial.indexOf('=')), partial.slice(partial.indexOf('=') + 1)]
    const flag = findFlag(command, name)
    if (flag?.type === 'option') return completeFlagValue(command, flag, value, afterCommand, sources, `${name}=`)
    return {candidates: [], directive: Directive.noFileComp}
  }

  if (partial.startsWith('-')) {
    const used = new Set(afterCommand.map((w) => findFlag(command, w.split('=')[0])?.name).filter(Boolean))
    const flags = Object.values(command.flags)
      .filter((f) => !f.hidden && ((f.type === 'option' && f.multiple) || !used.has(f.name)))
      .map((f) => withDescription(`--${f.name}`, f.summary ?? f.description))
    return {candidates: [...flags, '--help'].filter((f) => f.startsWith(partial)), directive: Directive.noFileComp}
  }

  const args = Object.values(command.args)
  const arg = args[positionals(command, afterCommand).length]
  if (!arg) return {candidates: [], directive: Directive.noFileComp}
  const values = arg.options ?? (arg.name === 'component' ? (COMPONENT_ARGS[command.id] ?? CONTROL_PLANE_COMPONENTS) : [])
  return {candidates: values.filter((v) => v.startsWith(partial)), directive: Directive.noFileComp}
}

/** The protocol's output: candidates one per line, then `:<directive>`. */
export function formatCompletion(completion: Completion): string {
  return [...completion.candidates, `:${completion.directive}`].join('\n') + '\n'
}

/** Contexts of the kubeconfig kubectl would use; none when it cannot be read (never an error at TAB). */
export async function kubeconfigContexts(kubeconfig: string | undefined): Promise<string[]> {
  try {
    const {kubeconfigFiles, mergeKubeconfigs} = await import('../kube/config.js')
    return mergeKubeconfigs(kubeconfigFiles(kubeconfig)).contexts.map((c) => c.name)
  } catch {
    return []
  }
}
