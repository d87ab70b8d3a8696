import {stringify} from 'yaml'

import {NODE_TASK_LABEL} from '../../../src/node/runner.js'

/**
 * kwok's configuration for the test cluster: which nodes it plays the kubelet for, and the
 * Stages that move pods through their lifecycle. Written for this harness (not kwok's stock
 * stages) because of three rules of ours:
 * - node-task pods (label selfhost.kubectl.io/node-task) are never touched: the harness
 *   runs them for real and reports their status itself;
 * - a pod whose image tag ends in "-broken" starts but never becomes Ready (a crash loop),
 *   so upgrade tests can watch a rollout fail and roll back;
 * - every other pod becomes Running and Ready.
 */

/** The annotation that hands a Node to kwok. */
export const KWOK_NODE_ANNOTATION = 'kwok.x-k8s.io/node'
export const KWOK_NODE_ANNOTATION_VALUE = 'fake'
/** Image tags with this suffix never become Ready. */
export const BROKEN_IMAGE_SUFFIX = '-broken'

// Node tasks carry managed-by=kubectl-selfhost and this label; pivot's workloads may carry the
// former too, and those kwok must simulate: the node-task label alone decides.
const NODE_TASK_SELECTOR = {key: `.metadata.labels["${NODE_TASK_LABEL}"]`, operator: 'DoesNotExist'}
const NOT_DELETING = {key: '.metadata.deletionTimestamp', operator: 'DoesNotExist'}
const HAS_BROKEN_IMAGE = `[.spec.containers[].image | endswith("${BROKEN_IMAGE_SUFFIX}")] | any`

const POD_ADDRESSES = `
hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
startTime: {{ Now | Quote }}
phase: Running
`

const stage = (name: string, resource: 'Pod' | 'Node', selector: unknown[], next: Record<string, unknown>, delayMs = 0) => ({
  apiVersion: 'kwok.x-k8s.io/v1alpha1',
  kind: 'Stage',
  metadata: {name},
  spec: {
    resourceRef: {apiGroup: 'v1', kind: resource},
    selector: {matchExpressions: selector},
    ...(delayMs > 0 ? {delay: {durationMilliseconds: delayMs}} : {}),
    next,
  },
})

function nodeReady() {
  return stage('selfhost-node-ready', 'Node', [{key: '.status.conditions.[] | select( .type == "Ready" ) | .status', operator: 'NotIn', values: ['True']}], {
    statusTemplate: `
conditions:
{{ $now := Now }}
{{ range $type := list "MemoryPressure" "DiskPressure" "PIDPressure" }}
- type: {{ $type }}
  status: "False"
  reason: KubeletHasSufficient{{ trimSuffix "Pressure" $type }}
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
- type: Ready
  status: "True"
  reason: KubeletReady
  message: kubelet is posting ready status (simulated by kwok)
  lastHeartbeatTime: {{ $now | Quote }}
  lastTransitionTime: {{ $now | Quote }}
daemonEndpoints:
  kubeletEndpoint:
    Port: {{ NodePort }}
phase: Running
`,
  })
}

function podReady() {
  return stage(
    'selfhost-pod-ready',
    'Pod',
    [
      NOT_DELETING,
      NODE_TASK_SELECTOR,
      {key: '.status.phase', operator: 'NotIn', values: ['Running']},
      {key: HAS_BROKEN_IMAGE, operator: 'NotIn', values: ['true']},
    ],
    {
      statusTemplate: `
{{ $now := Now }}
conditions:
{{ range $type := list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
- type: {{ $type }}
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
{{ end }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: {{ printf "%s@sha256:kwok" .image | Quote }}
  ready: true
  started: true
  restartCount: 0
  state:
    running:
      startedAt: {{ $now | Quote }}
{{ end }}
${POD_ADDRESSES}`,
    },
    200,
  )
}

function podBroken() {
  return stage(
    'selfhost-pod-broken',
    'Pod',
    [
      NOT_DELETING,
      NODE_TASK_SELECTOR,
      {key: '.status.phase', operator: 'NotIn', values: ['Running']},
      {key: HAS_BROKEN_IMAGE, operator: 'In', values: ['true']},
    ],
    {
      statusTemplate: `
{{ $now := Now }}
conditions:
- type: PodScheduled
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: Initialized
  status: "True"
  lastTransitionTime: {{ $now | Quote }}
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  lastTransitionTime: {{ $now | Quote }}
containerStatuses:
{{ range .spec.containers }}
- name: {{ .name | Quote }}
  image: {{ .image | Quote }}
  imageID: {{ printf "%s@sha256:kwok" .image | Quote }}
  ready: false
  started: false
  restartCount: 5
  state:
    waiting:
      reason: CrashLoopBackOff
      message: back-off restarting failed container (image tag marked broken by the test cluster)
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{ $now | Quote }}
      finishedAt: {{ $now | Quote }}
{{ end }}
${POD_ADDRESSES}`,
    },
    200,
  )
}

function podDelete() {
  return stage('selfhost-pod-delete', 'Pod', [{key: '.metadata.deletionTimestamp', operator: 'Exists'}, NODE_TASK_SELECTOR], {delete: true}, 200)
}

export interface KwokConfigInput {
  nodePort: number
  serverAddress: string
  tlsCertFile: string
  tlsPrivateKeyFile: string
  podCidr: string
}

/** The multi-document YAML given to `kwok --config`. */
export function kwokConfigYaml(input: KwokConfigInput): string {
  const configuration = {
    apiVersion: 'config.kwok.x-k8s.io/v1alpha1',
    kind: 'KwokConfiguration',
    options: {
      cidr: input.podCidr,
      nodePort: input.nodePort,
      serverAddress: input.serverAddress,
      tlsCertFile: input.tlsCertFile,
      tlsPrivateKeyFile: input.tlsPrivateKeyFile,
      manageAllNodes: false,
      manageNodesWithAnnotationSelector: `${KWOK_NODE_ANNOTATION}=${KWOK_NODE_ANNOTATION_VALUE}`,
      nodeLeaseDurationSeconds: 40,
      // kwok does not default these when they come from a config file.
      enableDebuggingHandlers: true,
      nodeLeaseParallelism: 4,
      nodePlayStageParallelism: 4,
      podPlayStageParallelism: 4,
      podsOnNodeSyncParallelism: 4,
      // Pod logs are mapped per pod by the harness, through Logs objects it creates.
      enableCRDs: ['Logs'],
    },
  }
  return [configuration, nodeReady(), podReady(), podBroken(), podDelete()].map((doc) => stringify(doc)).join('---\n')
}

/** A minimal definition of kwok's Logs resource (the harness creates one per pod whose log it serves). */
export const LOGS_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: {name: 'logs.kwok.x-k8s.io'},
  spec: {
    group: 'kwok.x-k8s.io',
    names: {kind: 'Logs', listKind: 'LogsList', plural: 'logs', singular: 'logs'},
    scope: 'Namespaced',
    versions: [
      {
        name: 'v1alpha1',
        served: true,
        storage: true,
        subresources: {status: {}},
        schema: {openAPIV3Schema: {type: 'object', 'x-kubernetes-preserve-unknown-fields': true}},
      },
    ],
  },
}
