import {readFileSync, readdirSync, statSync} from 'node:fs'
import {basename, join} from 'node:path'

import {CliError} from '../errors.js'
import {StaticManifest, componentOfPod, parseStaticPod} from './manifest.js'

const isManifestFile = (name: string) => /\.(ya?ml|json)$/i.test(name) && !name.startsWith('.')

function readNode(dir: string, node: string): StaticManifest[] {
  const manifests: StaticManifest[] = []
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name)
    if (!isManifestFile(name) || !statSync(path).isFile()) continue
    const bytes = readFileSync(path, 'utf8')
    const component = componentOfPod(parseStaticPod(bytes, path))
    // etcd and anything else in the directory stay static: only the three pivoted components matter.
    if (component) manifests.push({node, component, bytes})
  }

  return manifests
}

/**
 * Static manifests from a copy of /etc/kubernetes/manifests. Either one node's files directly
 * in DIR (the node is named by `node`), or one subdirectory per control-plane node, named after it.
 */
export function readManifestDir(dir: string, node = 'control-plane'): StaticManifest[] {
  let entries: string[]
  try {
    entries = readdirSync(dir)
  } catch (error) {
    throw new CliError(`cannot read --from-dir ${dir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }

  if (entries.some((e) => isManifestFile(e) && statSync(join(dir, e)).isFile())) return readNode(dir, node)
  const subdirs = entries.filter((e) => statSync(join(dir, e)).isDirectory()).sort()
  const manifests = subdirs.flatMap((sub) => readNode(join(dir, sub), basename(sub)))
  if (manifests.length === 0) throw new CliError(`no static pod manifests in ${dir} (expected kube-apiserver.yaml etc., or one subdirectory per node)`)
  return manifests
}
