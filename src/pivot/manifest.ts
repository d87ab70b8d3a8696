import {createHash} from 'node:crypto'

import {parse as parseYaml, stringify as stringifyYaml} from 'yaml'

import type {V1Pod} from '../kube/types.js'
import {PIVOTED_COMPONENTS, PivotedComponent} from '../controlplane/model.js'
import {CliError} from '../errors.js'

/** One static manifest file of one control-plane node, exactly as it is (or was) on disk. */
export interface StaticManifest {
  node: string
  component: PivotedComponent
  /** The file's bytes (as UTF-8 text): hashed and, on revert, written back unchanged. */
  bytes: string
}

/** kubeadm names each file after its component. */
export const manifestFileName = (component: PivotedComponent): string => `${component}.yaml`

export function sha256(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

/** Parses a static pod manifest (YAML or JSON); a file that is not one pod is refused in one line. */
export function parseStaticPod(bytes: string, where: string): V1Pod {
  let doc: unknown
  try {
    doc = parseYaml(bytes)
  } catch (error) {
    throw new CliError(`${where} is not valid YAML: ${(error as Error).message.split('\n')[0]}`)
  }

  const pod = doc as V1Pod
  if (!pod || typeof pod !== 'object' || pod.kind !== 'Pod' || !pod.spec?.containers?.length) {
    throw new CliError(`${where} is not a static pod manifest (kind Pod with containers)`)
  }

  return pod
}

/** Which pivoted component a static pod runs: its `component` label, else its first container's name. */
export function componentOfPod(pod: V1Pod): PivotedComponent | undefined {
  const candidates = [pod.metadata?.labels?.component, pod.spec?.containers?.[0]?.name, pod.metadata?.name]
  return PIVOTED_COMPONENTS.find((c) => candidates.includes(c))
}

/**
 * The same manifest with `--permit-port-sharing=true` added after the binary's name in its
 * command list. A textual insertion, so every other byte stays as the operator wrote it;
 * a manifest laid out differently is re-serialised instead.
 */
export function withPortSharing(bytes: string, component: PivotedComponent): string {
  if (/--permit-port-sharing(=true)?\s*$/m.test(bytes)) return bytes
  const lines = bytes.split('\n')
  const binaryLine = lines.findIndex((line) => new RegExp(`^\\s*- ${component}\\s*$`).test(line))
  if (binaryLine >= 0) {
    const indent = /^(\s*)-/.exec(lines[binaryLine])![1]
    lines.splice(binaryLine + 1, 0, `${indent}- --permit-port-sharing=true`)
    return lines.join('\n')
  }

  const pod = parseStaticPod(bytes, `the ${component} manifest`)
  const container = pod.spec!.containers[0]
  container.command = [...(container.command ?? []), '--permit-port-sharing=true']
  return JSON.stringify(pod, null, 2) + '\n'
}

/** Annotations the kubelet and API server put on a mirror pod; none were in the file. */
const MIRROR_ONLY_ANNOTATIONS = /^kubernetes\.io\/config\.(mirror|hash|source|seen)$/

/**
 * A static manifest rebuilt from its mirror pod, for planning when no node pod may run. The
 * API server's defaults stay (they are valid values); what the kubelet and the API add per
 * node goes: identity, owner, node name, status. The kubelet's catch-all NoExecute toleration
 * stays: it is what the static pod really has, and the planner gives every control-plane pod
 * the same one.
 * `bytes` is this canonical YAML, not the file: its hash differs from the one pivot records.
 */
export function manifestFromMirrorPod(pod: V1Pod): StaticManifest | undefined {
  const component = componentOfPod(pod)
  const node = pod.spec?.nodeName
  if (!component || !node) return undefined
  const annotations = Object.fromEntries(Object.entries(pod.metadata?.annotations ?? {}).filter(([k]) => !MIRROR_ONLY_ANNOTATIONS.test(k)))
  const spec = structuredClone(pod.spec!)
  delete spec.nodeName
  const manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: component,
      namespace: pod.metadata?.namespace,
      labels: pod.metadata?.labels,
      ...(Object.keys(annotations).length > 0 ? {annotations} : {}),
    },
    spec,
  }
  return {node, component, bytes: stringifyYaml(manifest)}
}
