import {existsSync, readFileSync} from 'node:fs'
import {homedir} from 'node:os'
import {delimiter, dirname, isAbsolute, resolve} from 'node:path'
import {parse as parseYaml} from 'yaml'

import {CliError} from '../errors.js'

/** How the user chose the cluster: the flags kubectl users know. */
export interface ClusterTarget {
  kubeconfig?: string
  context?: string
  namespace?: string
  requestTimeoutMs?: number
}

export interface Named {
  name: string
  [key: string]: unknown
}

interface RawKubeconfig {
  'current-context'?: string
  clusters?: Named[]
  users?: Named[]
  contexts?: Named[]
}

/** Fields holding file paths, which kubectl resolves relative to the kubeconfig's folder. */
const PATH_FIELDS: Record<string, string[]> = {
  cluster: ['certificate-authority'],
  user: ['client-certificate', 'client-key', 'tokenFile'],
}

export interface MergedKubeconfig {
  currentContext: string
  clusters: Named[]
  users: Named[]
  contexts: Named[]
  files: string[]
}

/** The kubeconfig files kubectl would read: --kubeconfig, else KUBECONFIG, else ~/.kube/config. */
export function kubeconfigFiles(explicit: string | undefined, env: NodeJS.ProcessEnv = process.env): string[] {
  if (explicit) {
    if (!existsSync(explicit)) throw new CliError(`kubeconfig ${explicit} does not exist; check --kubeconfig`)
    return [explicit]
  }

  if (env.KUBECONFIG) {
    const files = env.KUBECONFIG.split(delimiter).filter((f) => f && existsSync(f))
    if (files.length === 0) throw new CliError(`none of the files in KUBECONFIG (${env.KUBECONFIG}) exist; fix KUBECONFIG or pass --kubeconfig`)
    return files
  }

  const home = resolve(env.HOME ?? homedir(), '.kube', 'config')
  if (!existsSync(home)) throw new CliError('no kubeconfig found: set KUBECONFIG or pass --kubeconfig')
  return [home]
}

function absolutize(entry: Named, kind: 'cluster' | 'user', dir: string): Named {
  const body = {...(entry[kind] as Record<string, unknown> | undefined)}
  for (const field of PATH_FIELDS[kind]) {
    const value = body[field]
    if (typeof value === 'string' && value && !isAbsolute(value)) body[field] = resolve(dir, value)
  }

  // client-go resolves an exec plugin's command against the file only when it is a path, not a name looked up on PATH.
  const exec = body.exec as {command?: unknown} | undefined
  if (kind === 'user' && exec && typeof exec.command === 'string' && exec.command.includes('/') && !isAbsolute(exec.command)) {
    body.exec = {...exec, command: resolve(dir, exec.command)}
  }

  return {...entry, [kind]: body}
}

/**
 * Merges kubeconfig files with kubectl's rule: the first file to set a value wins, both for
 * current-context and for each named cluster, user and context.
 */
export function mergeKubeconfigs(files: string[]): MergedKubeconfig {
  const merged: MergedKubeconfig = {currentContext: '', clusters: [], users: [], contexts: [], files}
  for (const file of files) {
    let raw: RawKubeconfig
    try {
      raw = (parseYaml(readFileSync(file, 'utf8')) ?? {}) as RawKubeconfig
    } catch (error) {
      throw new CliError(`kubeconfig ${file} is not valid YAML: ${(error as Error).message.split('\n')[0]}`)
    }

    const dir = dirname(resolve(file))
    if (!merged.currentContext && raw['current-context']) merged.currentContext = raw['current-context']
    const add = (into: Named[], items: Named[] | undefined, map: (n: Named) => Named) => {
      for (const item of items ?? []) {
        if (item?.name && !into.some((n) => n.name === item.name)) into.push(map(item))
      }
    }

    add(merged.clusters, raw.clusters, (n) => absolutize(n, 'cluster', dir))
    add(merged.users, raw.users, (n) => absolutize(n, 'user', dir))
    add(merged.contexts, raw.contexts, (n) => n)
  }

  return merged
}

/** The context that will be used, after --context. Fails with the list of known contexts. */
export function selectContext(merged: MergedKubeconfig, requested?: string): Named {
  const name = requested || merged.currentContext
  const known = merged.contexts.map((c) => c.name)
  if (!name) {
    throw new CliError(`no current context in ${merged.files.join(', ')}; pass --context (known: ${known.join(', ') || 'none'})`)
  }

  const context = merged.contexts.find((c) => c.name === name)
  if (!context) {
    throw new CliError(`context "${name}" not found in ${merged.files.join(', ')}; known contexts: ${known.join(', ') || 'none'}`)
  }

  const body = context.context as {cluster?: string; user?: string} | undefined
  if (!merged.clusters.some((c) => c.name === body?.cluster)) {
    throw new CliError(`context "${name}" refers to cluster "${body?.cluster}", which is not defined in the kubeconfig`)
  }

  return context
}
