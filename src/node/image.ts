import {SYSTEM_NAMESPACE} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import type {KubeClient} from '../kube/client.js'

/**
 * The default image of node tasks: the one the cluster's own kube-proxy DaemonSet runs. It is on
 * every node already (so it works air-gapped and is never pulled), and it has what the tasks
 * use: sh, cat, grep, ln, rm, sleep, wc, iptables and nft (registry.k8s.io's kube-proxy image is
 * built on distroless-iptables; older ones on debian-iptables, which has more).
 */
export async function nodeTaskImage(api: Pick<KubeClient, 'listDaemonSets'>): Promise<string> {
  const kubeProxy = (await api.listDaemonSets(SYSTEM_NAMESPACE)).items.find((d) => d.metadata?.name === 'kube-proxy')
  const containers = kubeProxy?.spec?.template?.spec?.containers ?? []
  const image = (containers.find((c) => c.name === 'kube-proxy') ?? containers[0])?.image
  if (!image) {
    throw new CliError(
      `no kube-proxy DaemonSet in ${SYSTEM_NAMESPACE} to borrow an image from (is kube-proxy replaced, e.g. by Cilium?): pass --image with an image that is on the nodes and has sh, cat, ln, rm, sleep and wc`,
    )
  }

  return image
}
