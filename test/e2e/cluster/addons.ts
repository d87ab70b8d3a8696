import {stringify} from 'yaml'

import {imageRegistry} from './manifests.js'

/**
 * The objects `kubeadm init` leaves in a cluster besides the static pods: its
 * ClusterConfiguration, kube-proxy (ConfigMap, ServiceAccount, DaemonSet) and CoreDNS.
 * Their pods are simulated by kwok, except that on worker nodes the log of a kube-proxy pod
 * is the real kube-proxy's that runs in the node's network namespace.
 */

export interface AddonInput {
  kubeadmVersion: string
  serviceCidr: string
  podCidr: string
  dnsServiceIp: string
  controlPlaneEndpoint: string
}

/** kube-proxy's configuration as kubeadm writes it into the kube-proxy ConfigMap (mode iptables). */
export function kubeProxyConfiguration(input: {podCidr: string; kubeconfig: string; hostnameOverride?: string}): Record<string, unknown> {
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    bindAddress: '0.0.0.0',
    clientConnection: {kubeconfig: input.kubeconfig},
    clusterCIDR: input.podCidr,
    // 0 leaves the kernel's conntrack settings alone (they are not all per network namespace).
    conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s'},
    ...(input.hostnameOverride ? {hostnameOverride: input.hostnameOverride} : {}),
    mode: 'iptables',
    iptables: {masqueradeAll: false, syncPeriod: '30s', minSyncPeriod: '1s'},
  }
}

export function addonObjects(input: AddonInput): Array<{groupVersion: string; resource: string; object: Record<string, unknown>}> {
  const registry = imageRegistry(input.kubeadmVersion)
  const ns = 'kube-system'
  const clusterConfiguration = {
    apiVersion: 'kubeadm.k8s.io/v1beta4',
    kind: 'ClusterConfiguration',
    kubernetesVersion: input.kubeadmVersion,
    controlPlaneEndpoint: input.controlPlaneEndpoint,
    imageRepository: registry,
    clusterName: 'kubernetes',
    certificatesDir: '/etc/kubernetes/pki',
    networking: {dnsDomain: 'cluster.local', serviceSubnet: input.serviceCidr, podSubnet: input.podCidr},
    etcd: {local: {dataDir: '/var/lib/etcd'}},
  }
  const kubeProxyLabels = {'k8s-app': 'kube-proxy'}
  const dnsLabels = {'k8s-app': 'kube-dns'}
  return [
    {
      groupVersion: 'v1',
      resource: 'configmaps',
      object: {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {name: 'kubeadm-config', namespace: ns},
        data: {ClusterConfiguration: stringify(clusterConfiguration)},
      },
    },
    {
      groupVersion: 'v1',
      resource: 'configmaps',
      object: {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {name: 'kube-proxy', namespace: ns, labels: {app: 'kube-proxy'}},
        data: {
          'config.conf': stringify(kubeProxyConfiguration({podCidr: input.podCidr, kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf'})),
          'kubeconfig.conf': stringify({
            apiVersion: 'v1',
            kind: 'Config',
            clusters: [
              {
                name: 'default',
                cluster: {'certificate-authority': '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt', server: `https://${input.controlPlaneEndpoint}`},
              },
            ],
            contexts: [{name: 'default', context: {cluster: 'default', namespace: 'default', user: 'default'}}],
            'current-context': 'default',
            users: [{name: 'default', user: {tokenFile: '/var/run/secrets/kubernetes.io/serviceaccount/token'}}],
          }),
        },
      },
    },
    {groupVersion: 'v1', resource: 'serviceaccounts', object: {apiVersion: 'v1', kind: 'ServiceAccount', metadata: {name: 'kube-proxy', namespace: ns}}},
    {
      groupVersion: 'apps/v1',
      resource: 'daemonsets',
      object: {
        apiVersion: 'apps/v1',
        kind: 'DaemonSet',
        metadata: {name: 'kube-proxy', namespace: ns, labels: kubeProxyLabels},
        spec: {
          selector: {matchLabels: kubeProxyLabels},
          updateStrategy: {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1}},
          template: {
            metadata: {labels: kubeProxyLabels},
            spec: {
              containers: [
                {
                  name: 'kube-proxy',
                  image: `${registry}/kube-proxy:${input.kubeadmVersion}`,
                  command: ['/usr/local/bin/kube-proxy', '--config=/var/lib/kube-proxy/config.conf', '--hostname-override=$(NODE_NAME)'],
                  env: [{name: 'NODE_NAME', valueFrom: {fieldRef: {apiVersion: 'v1', fieldPath: 'spec.nodeName'}}}],
                  securityContext: {privileged: true},
                  volumeMounts: [
                    {name: 'kube-proxy', mountPath: '/var/lib/kube-proxy'},
                    {name: 'xtables-lock', mountPath: '/run/xtables.lock'},
                    {name: 'lib-modules', mountPath: '/lib/modules', readOnly: true},
                  ],
                },
              ],
              hostNetwork: true,
              nodeSelector: {'kubernetes.io/os': 'linux'},
              priorityClassName: 'system-node-critical',
              serviceAccountName: 'kube-proxy',
              tolerations: [{operator: 'Exists'}],
              volumes: [
                {name: 'kube-proxy', configMap: {name: 'kube-proxy'}},
                {name: 'xtables-lock', hostPath: {path: '/run/xtables.lock', type: 'FileOrCreate'}},
                {name: 'lib-modules', hostPath: {path: '/lib/modules'}},
              ],
            },
          },
        },
      },
    },
    {groupVersion: 'v1', resource: 'serviceaccounts', object: {apiVersion: 'v1', kind: 'ServiceAccount', metadata: {name: 'coredns', namespace: ns}}},
    {
      groupVersion: 'apps/v1',
      resource: 'deployments',
      object: {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: {name: 'coredns', namespace: ns, labels: dnsLabels},
        spec: {
          replicas: 2,
          selector: {matchLabels: dnsLabels},
          strategy: {type: 'RollingUpdate', rollingUpdate: {maxUnavailable: 1}},
          template: {
            metadata: {labels: dnsLabels},
            spec: {
              containers: [
                {
                  name: 'coredns',
                  image: `${registry}/coredns/coredns:v1.12.1`,
                  args: ['-conf', '/etc/coredns/Corefile'],
                  ports: [
                    {containerPort: 53, name: 'dns', protocol: 'UDP'},
                    {containerPort: 53, name: 'dns-tcp', protocol: 'TCP'},
                    {containerPort: 9153, name: 'metrics', protocol: 'TCP'},
                  ],
                  readinessProbe: {httpGet: {path: '/ready', port: 8181, scheme: 'HTTP'}},
                },
              ],
              nodeSelector: {'kubernetes.io/os': 'linux'},
              priorityClassName: 'system-cluster-critical',
              serviceAccountName: 'coredns',
              tolerations: [
                {key: 'CriticalAddonsOnly', operator: 'Exists'},
                {key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule'},
              ],
            },
          },
        },
      },
    },
    {
      groupVersion: 'v1',
      resource: 'services',
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: {name: 'kube-dns', namespace: ns, labels: {...dnsLabels, 'kubernetes.io/name': 'CoreDNS'}},
        spec: {
          clusterIP: input.dnsServiceIp,
          selector: dnsLabels,
          ports: [
            {name: 'dns', port: 53, protocol: 'UDP', targetPort: 53},
            {name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 53},
            {name: 'metrics', port: 9153, protocol: 'TCP', targetPort: 9153},
          ],
        },
      },
    },
  ]
}
