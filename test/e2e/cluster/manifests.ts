import semver from 'semver'
import {stringify} from 'yaml'

/**
 * kubeadm-style static pod manifests of one control-plane node, written from what kubeadm
 * generates (flags, labels, probes, volumes) for the version asked. They are what the
 * "kubelet" loop turns into mirror pods and what pivot/upgrade read and rewrite; the
 * processes really serving the test cluster are started by the harness, not from these.
 */

export interface ManifestInput {
  kubeadmVersion: string
  nodeName: string
  nodeIp: string
  /** Every control-plane node, for etcd's initial cluster. */
  etcdMembers: Array<{name: string; ip: string}>
  serviceCidr: string
  podCidr: string
}

export const STATIC_COMPONENTS = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler'] as const
export type StaticComponent = (typeof STATIC_COMPONENTS)[number]

/** The image registry kubeadm defaults to: registry.k8s.io since 1.25, k8s.gcr.io before. */
/** The etcd build.sh builds (ETCD_VERSION v3.6.16), as kubeadm tags it. */
export const ETCD_IMAGE_TAG = '3.6.16-0'

export function imageRegistry(kubeadmVersion: string): string {
  return semver.gte(kubeadmVersion, '1.25.0') ? 'registry.k8s.io' : 'k8s.gcr.io'
}

/**
 * The etcd image tag of each kubeadm minor. From 1.34 on, the tag of the etcd that really runs
 * (build.sh's ETCD_VERSION), so what `status` shows and what serves agree; older minors keep
 * the tags their kubeadm pinned, since they stand in for older clusters.
 */
export function etcdImageTag(kubeadmVersion: string): string {
  const minor = semver.minor(kubeadmVersion)
  if (minor >= 34) return ETCD_IMAGE_TAG
  if (minor >= 29) return '3.5.16-0'
  if (minor >= 22) return '3.5.0-0'
  if (minor >= 19) return '3.4.13-0'
  return '3.3.15-0'
}

const hostPathVolume = (name: string, path: string, type: string) => ({name, hostPath: {path, type}})
const mount = (name: string, mountPath: string, readOnly = true) => ({name, mountPath, ...(readOnly ? {readOnly: true} : {})})

function probe(host: string, port: number, path: string, failureThreshold: number, extra: Record<string, number> = {}) {
  return {
    failureThreshold,
    httpGet: {host, path, port, scheme: port === 2381 ? 'HTTP' : 'HTTPS'},
    initialDelaySeconds: 10,
    periodSeconds: 10,
    timeoutSeconds: 15,
    ...extra,
  }
}

/** The pod skeleton kubeadm shares between its static pods. */
function staticPod(
  component: StaticComponent,
  kubeadmVersion: string,
  container: Record<string, unknown>,
  volumes: unknown[],
  annotations: Record<string, string> = {},
) {
  const modern = semver.gte(kubeadmVersion, '1.19.0')
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      ...(Object.keys(annotations).length > 0 ? {annotations} : {}),
      labels: {component, tier: 'control-plane'},
      name: component,
      namespace: 'kube-system',
    },
    spec: {
      containers: [{name: component, imagePullPolicy: 'IfNotPresent', ...container}],
      hostNetwork: true,
      ...(modern ? {priority: 2000001000} : {}),
      priorityClassName: 'system-node-critical',
      ...(modern ? {securityContext: {seccompProfile: {type: 'RuntimeDefault'}}} : {}),
      volumes,
    },
  }
}

const caVolumes = [
  hostPathVolume('ca-certs', '/etc/ssl/certs', 'DirectoryOrCreate'),
  hostPathVolume('etc-ca-certificates', '/etc/ca-certificates', 'DirectoryOrCreate'),
  hostPathVolume('k8s-certs', '/etc/kubernetes/pki', 'DirectoryOrCreate'),
]
const caMounts = [mount('ca-certs', '/etc/ssl/certs'), mount('etc-ca-certificates', '/etc/ca-certificates'), mount('k8s-certs', '/etc/kubernetes/pki')]

function etcd(input: ManifestInput) {
  const {nodeName, nodeIp} = input
  // kubeadm join grows the member list one node at a time: each node names itself and the ones before it.
  const position = input.etcdMembers.findIndex((m) => m.name === nodeName)
  const initialCluster = input.etcdMembers.slice(0, position + 1).map((m) => `${m.name}=https://${m.ip}:2380`)
  return staticPod(
    'etcd',
    input.kubeadmVersion,
    {
      command: [
        'etcd',
        `--advertise-client-urls=https://${nodeIp}:2379`,
        '--cert-file=/etc/kubernetes/pki/etcd/server.crt',
        '--client-cert-auth=true',
        '--data-dir=/var/lib/etcd',
        `--initial-advertise-peer-urls=https://${nodeIp}:2380`,
        `--initial-cluster=${initialCluster.join(',')}`,
        ...(position > 0 ? ['--initial-cluster-state=existing'] : []),
        '--key-file=/etc/kubernetes/pki/etcd/server.key',
        `--listen-client-urls=https://127.0.0.1:2379,https://${nodeIp}:2379`,
        '--listen-metrics-urls=http://127.0.0.1:2381',
        `--listen-peer-urls=https://${nodeIp}:2380`,
        `--name=${nodeName}`,
        '--peer-cert-file=/etc/kubernetes/pki/etcd/peer.crt',
        '--peer-client-cert-auth=true',
        '--peer-key-file=/etc/kubernetes/pki/etcd/peer.key',
        '--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
        '--snapshot-count=10000',
        '--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt',
      ],
      image: `${imageRegistry(input.kubeadmVersion)}/etcd:${etcdImageTag(input.kubeadmVersion)}`,
      livenessProbe: probe('127.0.0.1', 2381, '/livez', 8),
      readinessProbe: probe('127.0.0.1', 2381, '/readyz', 3),
      resources: {requests: {cpu: '100m', memory: '100Mi'}},
      startupProbe: probe('127.0.0.1', 2381, '/readyz', 24),
      volumeMounts: [mount('etcd-data', '/var/lib/etcd', false), mount('etcd-certs', '/etc/kubernetes/pki/etcd', false)],
    },
    [hostPathVolume('etcd-certs', '/etc/kubernetes/pki/etcd', 'DirectoryOrCreate'), hostPathVolume('etcd-data', '/var/lib/etcd', 'DirectoryOrCreate')],
    {'kubeadm.kubernetes.io/etcd.advertise-client-urls': `https://${nodeIp}:2379`},
  )
}

function apiserver(input: ManifestInput) {
  const {nodeIp, kubeadmVersion} = input
  const flags = [
    `--advertise-address=${nodeIp}`,
    '--allow-privileged=true',
    '--authorization-mode=Node,RBAC',
    '--client-ca-file=/etc/kubernetes/pki/ca.crt',
    '--enable-admission-plugins=NodeRestriction',
    '--enable-bootstrap-token-auth=true',
    '--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt',
    '--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.crt',
    '--etcd-keyfile=/etc/kubernetes/pki/apiserver-etcd-client.key',
    '--etcd-servers=https://127.0.0.1:2379',
    '--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt',
    '--kubelet-client-key=/etc/kubernetes/pki/apiserver-kubelet-client.key',
    '--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname',
    '--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt',
    '--proxy-client-key-file=/etc/kubernetes/pki/front-proxy-client.key',
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-username-headers=X-Remote-User',
    '--secure-port=6443',
    '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
    '--service-account-key-file=/etc/kubernetes/pki/sa.pub',
    '--service-account-signing-key-file=/etc/kubernetes/pki/sa.key',
    `--service-cluster-ip-range=${input.serviceCidr}`,
    '--tls-cert-file=/etc/kubernetes/pki/apiserver.crt',
    '--tls-private-key-file=/etc/kubernetes/pki/apiserver.key',
  ]
  // Before 1.20 kubeadm still disabled the insecure port explicitly.
  if (semver.lt(kubeadmVersion, '1.20.0')) flags.splice(1, 0, '--insecure-port=0')
  const health = semver.gte(kubeadmVersion, '1.20.0') ? {live: '/livez', ready: '/readyz'} : {live: '/healthz', ready: '/healthz'}
  return staticPod(
    'kube-apiserver',
    kubeadmVersion,
    {
      command: ['kube-apiserver', ...flags],
      image: `${imageRegistry(kubeadmVersion)}/kube-apiserver:${kubeadmVersion}`,
      livenessProbe: probe(nodeIp, 6443, health.live, 8),
      readinessProbe: probe(nodeIp, 6443, health.ready, 3, {periodSeconds: 1}),
      resources: {requests: {cpu: '250m'}},
      startupProbe: probe(nodeIp, 6443, health.live, 24),
      volumeMounts: caMounts,
    },
    caVolumes,
    {'kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint': `${nodeIp}:6443`},
  )
}

function controllerManager(input: ManifestInput) {
  const {kubeadmVersion} = input
  const securePort = semver.gte(kubeadmVersion, '1.20.0') ? 10257 : 10252
  return staticPod(
    'kube-controller-manager',
    kubeadmVersion,
    {
      command: [
        'kube-controller-manager',
        '--allocate-node-cidrs=true',
        '--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf',
        '--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf',
        '--bind-address=127.0.0.1',
        '--client-ca-file=/etc/kubernetes/pki/ca.crt',
        `--cluster-cidr=${input.podCidr}`,
        '--cluster-name=kubernetes',
        '--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt',
        '--cluster-signing-key-file=/etc/kubernetes/pki/ca.key',
        '--controllers=*,bootstrapsigner,tokencleaner',
        '--kubeconfig=/etc/kubernetes/controller-manager.conf',
        '--leader-elect=true',
        '--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt',
        '--root-ca-file=/etc/kubernetes/pki/ca.crt',
        '--service-account-private-key-file=/etc/kubernetes/pki/sa.key',
        `--service-cluster-ip-range=${input.serviceCidr}`,
        '--use-service-account-credentials=true',
      ],
      image: `${imageRegistry(kubeadmVersion)}/kube-controller-manager:${kubeadmVersion}`,
      livenessProbe: probe('127.0.0.1', securePort, '/healthz', 8),
      resources: {requests: {cpu: '200m'}},
      startupProbe: probe('127.0.0.1', securePort, '/healthz', 24),
      volumeMounts: [...caMounts, mount('kubeconfig', '/etc/kubernetes/controller-manager.conf')],
    },
    [...caVolumes, hostPathVolume('kubeconfig', '/etc/kubernetes/controller-manager.conf', 'FileOrCreate')],
  )
}

function scheduler(input: ManifestInput) {
  const {kubeadmVersion} = input
  const modern = semver.gte(kubeadmVersion, '1.20.0')
  const port = modern ? 10259 : 10251
  // kubeadm moved the scheduler's probes from /healthz to /livez and /readyz in 1.30.
  const split = semver.gte(kubeadmVersion, '1.30.0')
  return staticPod(
    'kube-scheduler',
    kubeadmVersion,
    {
      command: [
        'kube-scheduler',
        '--authentication-kubeconfig=/etc/kubernetes/scheduler.conf',
        '--authorization-kubeconfig=/etc/kubernetes/scheduler.conf',
        '--bind-address=127.0.0.1',
        '--kubeconfig=/etc/kubernetes/scheduler.conf',
        '--leader-elect=true',
      ],
      image: `${imageRegistry(kubeadmVersion)}/kube-scheduler:${kubeadmVersion}`,
      livenessProbe: probe('127.0.0.1', port, split ? '/livez' : '/healthz', 8),
      ...(split ? {readinessProbe: probe('127.0.0.1', port, '/readyz', 3, {periodSeconds: 1})} : {}),
      resources: {requests: {cpu: '100m'}},
      startupProbe: probe('127.0.0.1', port, split ? '/livez' : '/healthz', 24),
      volumeMounts: [mount('kubeconfig', '/etc/kubernetes/scheduler.conf')],
    },
    [hostPathVolume('kubeconfig', '/etc/kubernetes/scheduler.conf', 'FileOrCreate')],
  )
}

/** File name (as kubeadm names it) → YAML text, for one control-plane node. */
export function staticManifests(input: ManifestInput): Record<string, string> {
  const pods: Record<StaticComponent, unknown> = {
    etcd: etcd(input),
    'kube-apiserver': apiserver(input),
    'kube-controller-manager': controllerManager(input),
    'kube-scheduler': scheduler(input),
  }
  return Object.fromEntries(STATIC_COMPONENTS.map((c) => [`${c}.yaml`, stringify(pods[c])]))
}
