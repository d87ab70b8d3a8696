import type {Origin, Outcome, Step} from './walk.js'

export type ProxyMode = 'iptables' | 'nftables' | 'ipvs'

export interface ServicePortInfo {
  /** The port's name ("" when unnamed). */
  name: string
  port: number
  protocol: string
  nodePort?: number
  targetPort?: number | string
}

/** What trace needs of a Service, from the API or, offline, from the rules themselves. */
export interface ServiceInfo {
  namespace: string
  name: string
  type?: string
  clusterIPs: string[]
  externalIPs: string[]
  loadBalancerIPs: string[]
  ports: ServicePortInfo[]
  externalTrafficPolicy?: string
  internalTrafficPolicy?: string
  sessionAffinity?: string
  /** api: read from the cluster; rules: reconstructed from rule comments or chain names. */
  source: 'api' | 'rules'
}

/** An endpoint as EndpointSlices (and the pod behind it) describe it. */
export interface SliceEndpoint {
  ip: string
  port: number
  portName: string
  protocol: string
  ready: boolean
  serving: boolean
  terminating: boolean
  nodeName?: string
  pod?: string
  /** The pod's own Ready condition, when the pod was found. */
  podReady?: boolean
  podPhase?: string
}

export type FrontendKind = 'clusterIP' | 'nodePort' | 'externalIP' | 'loadBalancer'

export interface TracedEndpoint {
  ip: string
  port?: number
  /** Share of new connections (0..1) that reach this endpoint. */
  share: number
  /** The endpoint chain holding the DNAT (KUBE-SEP-..., endpoint-..., or the IPVS real server). */
  chain?: string
  masquerade: boolean
  masqueradeWhen: string[]
  /** Session affinity keeps a client on its endpoint for this long. */
  affinitySeconds?: number
  pod?: string
  node?: string
  /** Ready in an EndpointSlice; undefined offline. */
  ready?: boolean
  inSlice?: boolean
}

/** Packets that reach no endpoint. */
export interface TracedVerdict {
  kind: 'reject' | 'drop' | 'unhandled' | 'missing'
  share: number
  chain?: string
  line?: number
  reason: string
}

export interface TraceNode {
  action: string
  table?: string
  chain?: string
  line?: number
  comment?: string
  /** Share (0..1) of all packets of this frontend that pass here. */
  share: number
  /** This rule's own random choice, when it made one. */
  probability?: number
  assumed?: string
  endpoint?: {ip: string; port?: number; pod?: string; ready?: boolean}
  children: TraceNode[]
}

export interface FrontendTrace {
  kind: FrontendKind
  /** "172.30.0.41:80", or "<node>:30080" for a NodePort. */
  address: string
  from: Origin
  /** Conditions assumed for this result (e.g. a source inside loadBalancerSourceRanges). */
  assumptions: string[]
  endpoints: TracedEndpoint[]
  verdicts: TracedVerdict[]
  tree: TraceNode[]
}

export interface PortTrace {
  port: ServicePortInfo
  /** Chain names computed from the Service (iptables/nftables modes). */
  expectedChains?: Record<string, string>
  frontends: FrontendTrace[]
}

export type FindingKind = 'not-programmed' | 'not-in-slice' | 'share-sum' | 'no-rules' | 'mode-mismatch' | 'node-unreadable' | 'missing-chain'

export interface Finding {
  kind: FindingKind
  port?: string
  message: string
}

export interface TraceResult {
  service: {namespace: string; name: string; type?: string; clusterIPs: string[]; source: 'api' | 'rules'}
  node?: string
  mode: ProxyMode
  /** Who said which mode: --mode, kube-proxy itself (:10249/proxyMode), its ConfigMap, or the rules' look. */
  modeSource?: 'flag' | 'kube-proxy' | 'configmap' | 'rules'
  /** iptables backend the rules were read with (nft or legacy). */
  backend?: string
  /** Why a Service is not traced the usual way (headless, ExternalName, no selector...). */
  explanation?: string
  ports: PortTrace[]
  findings: Finding[]
  notes: string[]
}

/** Per-node traces and where they disagree (--all-nodes). */
export interface MultiNodeTrace {
  nodes: TraceResult[]
  differences: string[]
  findings: Finding[]
}

export type {Origin, Outcome, Step}
