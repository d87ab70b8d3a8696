import {readdirSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {readManifestDir} from '../../../src/pivot/from-dir.js'
import {containerArgv, flagValue} from '../../../src/controlplane/container.js'
import {StaticManifest, parseStaticPod} from '../../../src/pivot/manifest.js'
import {PlanNodeInfo} from '../../../src/pivot/plan.js'
import {sharedFixturesDir} from '../../helpers/ci.js'

const here = dirname(fileURLToPath(import.meta.url))
const repo = resolve(here, '../../..')
export const ownFixtures = join(repo, 'test/fixtures/kubeadm')
const sharedFixtures = sharedFixturesDir('kubeadm')

export const NODES = ['cp-1', 'cp-2', 'cp-3']
export const versionDirs = (root: string) =>
  readdirSync(root, {withFileTypes: true})
    .filter((e) => e.isDirectory())
    .map((e) => e.name)

/** Every kubeadm manifest set: the repo's own and, next to this checkout, the shared real-world ones. */
export const fixtureSets = [
  ...versionDirs(ownFixtures).map((v) => ({name: `own ${v}`, dir: join(ownFixtures, v)})),
  ...(sharedFixtures ? versionDirs(sharedFixtures).map((v) => ({name: `shared ${v}`, dir: join(sharedFixtures, v)})) : []),
]

/** The IP kubeadm rendered into a node's manifests (its advertise address). */
export function renderedIP(manifests: StaticManifest[]): string {
  const apiserver = manifests.find((m) => m.component === 'kube-apiserver')!
  return flagValue(containerArgv(parseStaticPod(apiserver.bytes, 'fixture').spec!.containers[0]), 'advertise-address')!
}

/** kubeadm renders every node's files alike but for its own IP: derive the other nodes the same way. */
export function clusterOf(dir: string, count = 3): {manifests: StaticManifest[]; ips: string[]; nodes: string[]} {
  const base = readManifestDir(dir, 'cp-1')
  const ip = renderedIP(base)
  const prefix = ip.split('.').slice(0, 3).join('.')
  const nodes = NODES.slice(0, count)
  const ips = nodes.map((_, i) => (i === 0 ? ip : `${prefix}.${200 + i}`))
  const escaped = new RegExp(ip.replace(/\./g, '\\.'), 'g')
  const manifests = nodes.flatMap((node, i) => base.map((m) => ({...m, node, bytes: m.bytes.replace(escaped, ips[i])})))
  return {manifests, ips, nodes}
}

export function threeNodes(dir: string): {manifests: StaticManifest[]; ips: string[]} {
  return clusterOf(dir, 3)
}

export function liveNodes(ips: string[], role: 'control-plane' | 'master', extraTaints: PlanNodeInfo['taints'] = []): PlanNodeInfo[] {
  const key = `node-role.kubernetes.io/${role}`
  return ips.map((internalIP, i) => ({name: NODES[i], internalIP, labels: {[key]: ''}, taints: [{key, effect: 'NoSchedule'}, ...extraTaints]}))
}
