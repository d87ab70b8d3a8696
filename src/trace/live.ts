import type {V1EndpointSlice, V1Node, V1Pod, V1Service} from '../kube/types.js'
import {parse as parseYaml} from 'yaml'

import {SYSTEM_NAMESPACE, isControlPlaneNode} from '../controlplane/model.js'
import {CliError} from '../errors.js'
import type {KubeClient} from '../kube/client.js'
import {isNotFound} from '../kube/errors.js'
import {isReady} from '../kube/objects.js'
import {NodeTaskApi, NodeTaskOptions, runNodeTask} from '../node/runner.js'
import {compareNodes} from './compare.js'
import {Cidr, parseCidr} from './ip.js'
import {RuleSections, SECTION_MARK, detectMode, ruleSetFor, splitSections} from './load.js'
import type {Finding, MultiNodeTrace, ProxyMode, ServiceInfo, SliceEndpoint, TraceResult} from './model.js'
import {closeMatches} from './suggest.js'
import {selectPorts} from './target.js'
import {RuleSet, traceService} from './trace.js'

export type TraceApi = NodeTaskApi &
  Pick<KubeClient, 'getService' | 'listServices' | 'listEndpointSlices' | 'listPods' | 'listNodes' | 'listDaemonSets' | 'getConfigMap'>

export interface LiveTraceOptions {
  namespace: string
  name: string
  /** A port name or number; all ports when undefined. */
  port?: string
  node?: string
  allNodes?: boolean
  image?: string
  debugNamespace?: string
  mode?: ProxyMode
  deadlineSeconds?: number
  task?: NodeTaskOptions
  onProgress?: (message: string) => void
}

/**
 * The chains of kube-proxy that hold a rule per Service: on a big node they have tens of
 * thousands of lines, and only the Service's own lines (and kube-proxy's generic ones) matter.
 */
const PER_SERVICE_CHAINS = 'KUBE-SERVICES KUBE-NODEPORTS KUBE-EXTERNAL-SERVICES KUBE-PROXY-FIREWALL'
/** Up to this many lines in nat KUBE-SERVICES (about 1,000 Services) the whole dump is read. */
const WHOLE_DUMP_MAX_LINES = 2000
/** Up to this many lines of `nft list table ip kube-proxy` (about 1,000 Services) it is printed whole. */
const NFT_WHOLE_MAX_LINES = 20_000
/** Up to this many lines of /proc/net/ip_vs (about 1,000 Services) `ipvsadm -Ln` is printed whole. */
const IPVS_WHOLE_MAX_LINES = 10_000

/**
 * Reads only what one Service needs, following jumps from the hooks: on a node with 10,000
 * Services a whole iptables-save takes over a minute (and crashed libnftnl's stack there),
 * while `iptables -t nat -S CHAIN` of the few chains one Service reaches takes milliseconds.
 * kube-proxy's per-Service chains are kept to the lines naming this Service and its generic
 * ("kubernetes ...") lines, in their order. The output looks like iptables-save with `-S`
 * lines (-P/-N) so the same parser reads it. Tools: sh (dash), grep and the iptables of the
 * kube-proxy image; nothing else (no sed, awk or sort there).
 */
export function serviceRulesScript(namespace: string, name: string, ipvsServices: string[] = []): string {
  // Namespace and name are DNS labels (checked by parseTraceTarget and the API): safe in a pattern.
  const key = `${namespace}/${name}`
  // ipvsadm options of the form "-t 10.96.0.1:443" (built by ipvsQueries from addresses): no shell characters.
  const queries = ipvsServices.filter((q) => /^(-t|-u|--sctp-service) [0-9a-fA-F.:[\]]+$/.test(q))
  return `
mark() { printf '%s\\n' "${SECTION_MARK}$1"; }
crashes=""
crash() { if [ "$2" -gt 128 ]; then crashes="$crashes $1:$2"; fi; }
ipt=""
for cmd in iptables iptables-nft iptables-legacy; do
  command -v "$cmd" >/dev/null 2>&1 || continue
  out=$("$cmd" -w 5 -t nat -S KUBE-SERVICES 2>/dev/null); rc=$?
  crash "$cmd" "$rc"
  case "$out" in *"-A KUBE-SERVICES "*) ipt="$cmd"; services="$out"; break ;; esac
done
targets() {
  while IFS= read -r line; do
    case "$line" in
      *" -j "*) t=\${line##* -j }; t=\${t%% *}; printf '%s\\n' "$t" ;;
      *" -g "*) t=\${line##* -g }; t=\${t%% *}; printf '%s\\n' "$t" ;;
    esac
  done
}
walk() {
  table=$1; shift
  queue="$*"; seen=" "
  printf '*%s\\n' "$table"
  while [ -n "$queue" ]; do
    set -- $queue; chain=$1; shift; queue="$*"
    case "$seen" in *" $chain "*) continue ;; esac
    seen="$seen$chain "
    # nat KUBE-SERVICES, the biggest chain, was read once already to find the backend.
    if [ "$table $chain" = "nat KUBE-SERVICES" ]; then out="$services"; rc=0
    else out=$("$ipt" -w 5 -t "$table" -S "$chain" 2>/dev/null); rc=$?
    fi
    crash "$ipt" "$rc"
    [ -n "$out" ] || continue
    case " ${PER_SERVICE_CHAINS} " in
      *" $chain "*) out=$(printf '%s\\n' "$out" | grep -i -E -e '^-[NP] ' -e '--comment "?${key}([: "]|$)' -e '--comment "?kubernetes ') ;;
    esac
    printf '%s\\n' "$out"
    for t in $(printf '%s\\n' "$out" | targets); do
      case "$t" in ACCEPT|DROP|REJECT|RETURN|DNAT|SNAT|MASQUERADE|MARK|CONNMARK|LOG|NFLOG|CT|NOTRACK|REDIRECT|TPROXY) ;; *) queue="$queue $t" ;; esac
    done
  done
  printf 'COMMIT\\n'
}
# A small node is read whole (iptables-save); a big one only where this Service leads.
if [ -n "$ipt" ]; then
  lines=$(printf '%s\\n' "$services" | wc -l)
  whole=""
  if [ "$lines" -le ${WHOLE_DUMP_MAX_LINES} ] && command -v "$ipt-save" >/dev/null 2>&1; then
    whole=$("$ipt-save" 2>/dev/null); rc=$?
    crash "$ipt-save" "$rc"
    [ "$rc" -eq 0 ] || whole=""
  fi
  if [ -n "$whole" ]; then mark "iptables $ipt-save"; printf '%s\\n' "$whole"
  else
    mark "iptables $ipt partial"
    walk nat PREROUTING OUTPUT
    walk filter INPUT FORWARD OUTPUT
  fi
else
  # No KUBE-SERVICES in any backend: show what there is (an empty set means "not iptables mode").
  for cmd in iptables-save iptables-nft-save iptables-legacy-save; do
    command -v "$cmd" >/dev/null 2>&1 || continue
    out=$("$cmd" 2>/dev/null); rc=$?
    crash "$cmd" "$rc"
    if [ "$rc" -eq 0 ]; then mark "iptables $cmd"; printf '%s\\n' "$out"; break; fi
  done
fi
# kube-proxy's table on a big node, trimmed on the node to this Service's chains, sets and map
# elements and the generic ones (a dash loop over the listing, with the image's tools only).
key='${key}'
nft_filter() {
  tab=$(printf '\\t')
  nl='
'
  set -f
  # The Service's addresses: the first word of each map element naming its chains.
  ips=" "
  IFS=$nl
  for l in $(printf '%s\\n' "$1" | grep -E -e "[A-Z2-7]{8}-\${key}/" -e "\\"\${key}[:\\"]"); do
    l=\${l#*elements = \\{ }
    l=\${l#"\${l%%[! \${tab}]*}"}
    l=\${l%%" "*}
    case "$l" in [0-9]*.*.*.*) case "$ips" in *" $l "*) ;; *) ips="$ips$l " ;; esac ;; esac
  done
  skip=0; filter=0; kept=""
  for line in $1; do
    case "$line" in
      "\${tab}}")
        if [ $skip = 1 ]; then skip=0; continue; fi
        filter=0 ;;
      "\${tab}chain "*|"\${tab}set "*|"\${tab}map "*)
        name=\${line#"\${tab}"* }; name=\${name%% *}
        case "$name" in
          cluster-ips|service-ips|service-nodeports|no-endpoint-services|no-endpoint-nodeports|firewall-ips) filter=1 ;;
          service-????????-*|external-????????-*|firewall-????????-*|local-????????-*|endpoint-????????-*|affinity-????????-*)
            case "$name" in *[A-Z2-7]"-\${key}/"*) ;; *) skip=1; continue ;; esac ;;
        esac ;;
      "\${tab}\${tab}elements = {"*|"\${tab}\${tab}\${tab}"*)
        [ $skip = 1 ] && continue
        if [ $filter = 1 ]; then
          rest=\${line#*elements = \\{ }
          last=0
          case "$rest" in *" }") rest=\${rest% \\}}; last=1 ;; esac
          IFS=,
          for el in $rest; do
            el=\${el#"\${el%%[! \${tab}]*}"}
            case "$el" in
              *[A-Z2-7]"-\${key}/"*|*"\\"\${key}:"*|*"\\"\${key}\\""*) kept="$kept, $el" ;;
              *) case "$ips" in *" \${el%% *} "*) kept="$kept, $el" ;; esac ;;
            esac
          done
          IFS=$nl
          if [ $last = 1 ] && [ -n "$kept" ]; then printf '%s\\n' "\${tab}\${tab}elements = { \${kept#, } }"; kept=""; fi
          continue
        fi ;;
      *) [ $skip = 1 ] && continue ;;
    esac
    printf '%s\\n' "$line"
  done
  unset IFS
  set +f
}
if command -v nft >/dev/null 2>&1; then
  out=$(nft list table ip kube-proxy 2>/dev/null); rc=$?
  crash nft "$rc"
  if [ "$rc" -eq 0 ]; then
    lines=$(printf '%s\\n' "$out" | wc -l)
    if [ "$lines" -le ${NFT_WHOLE_MAX_LINES} ]; then mark nft; printf '%s\\n' "$out"
    else mark "nft partial"; nft_filter "$out"
    fi
  fi
  out=""
fi
# IPVS: ipvsadm -Ln -t VIP:PORT names one virtual server; a big node is asked only for the Service's.
ipvs_lines=0
if [ -r /proc/net/ip_vs ]; then ipvs_lines=$(wc -l < /proc/net/ip_vs)
elif command -v ipvsadm >/dev/null 2>&1; then ipvs_lines=$(ipvsadm -Ln 2>/dev/null | wc -l)
fi
if command -v ipvsadm >/dev/null 2>&1 && [ "$ipvs_lines" -gt ${IPVS_WHOLE_MAX_LINES} ] && [ -n "${queries.join(' ')}" ]; then
  mark "ipvs partial"
  for q in ${queries.map((q) => `"${q}"`).join(' ')}; do
    out=$(ipvsadm -Ln $q 2>/dev/null); rc=$?
    crash ipvsadm "$rc"
    [ "$rc" -eq 0 ] && printf '%s\\n' "$out"
  done
elif command -v ipvsadm >/dev/null 2>&1 && out=$(ipvsadm -Ln 2>/dev/null); then mark ipvs; printf '%s\\n' "$out"
elif [ -r /proc/net/ip_vs ]; then mark ipvs; while IFS= read -r line; do printf '%s\\n' "$line"; done < /proc/net/ip_vs
fi
# kube-proxy answers its mode on its metrics port (127.0.0.1:10249 by default), when there is a client to ask.
if command -v curl >/dev/null 2>&1 && out=$(curl -fsS --max-time 2 http://127.0.0.1:10249/proxyMode 2>/dev/null); then mark "proxymode $out"
elif command -v wget >/dev/null 2>&1 && out=$(wget -qO- -T 2 http://127.0.0.1:10249/proxyMode 2>/dev/null); then mark "proxymode $out"
fi
for c in $crashes; do mark "crash \${c%%:*} \${c##*:}"; done
mark end
`
}

/** The Service as trace needs it. */
export function serviceInfoOf(service: V1Service): ServiceInfo {
  const spec = service.spec ?? {}
  const ips = (spec.clusterIPs ?? (spec.clusterIP ? [spec.clusterIP] : [])).filter((ip) => ip && ip !== 'None')
  return {
    namespace: service.metadata?.namespace ?? '',
    name: service.metadata?.name ?? '',
    type: spec.type ?? 'ClusterIP',
    clusterIPs: ips,
    externalIPs: spec.externalIPs ?? [],
    loadBalancerIPs: (service.status?.loadBalancer?.ingress ?? []).map((i) => i.ip).filter((ip): ip is string => Boolean(ip)),
    ports: (spec.ports ?? []).map((p) => ({
      name: p.name ?? '',
      port: p.port,
      protocol: (p.protocol ?? 'TCP').toLowerCase(),
      nodePort: p.nodePort,
      targetPort: p.targetPort,
    })),
    externalTrafficPolicy: spec.externalTrafficPolicy,
    internalTrafficPolicy: spec.internalTrafficPolicy,
    sessionAffinity: spec.sessionAffinity,
    source: 'api',
  }
}

/** Flattens EndpointSlices into one entry per endpoint address and port, with its pod. */
export function sliceEndpoints(slices: V1EndpointSlice[], pods: V1Pod[]): SliceEndpoint[] {
  const podByName = new Map(pods.map((p) => [p.metadata?.name ?? '', p]))
  const out: SliceEndpoint[] = []
  for (const slice of slices) {
    for (const endpoint of slice.endpoints ?? []) {
      const pod = endpoint.targetRef?.kind === 'Pod' ? podByName.get(endpoint.targetRef.name ?? '') : undefined
      for (const port of slice.ports ?? []) {
        for (const ip of endpoint.addresses ?? []) {
          out.push({
            ip,
            port: port.port ?? 0,
            portName: port.name ?? '',
            protocol: port.protocol ?? 'TCP',
            // Per the API, an unset condition means ready/serving.
            ready: endpoint.conditions?.ready !== false,
            serving: endpoint.conditions?.serving !== false,
            terminating: endpoint.conditions?.terminating === true,
            nodeName: endpoint.nodeName,
            pod: endpoint.targetRef?.kind === 'Pod' ? endpoint.targetRef.name : undefined,
            podReady: pod ? isReady(pod) : undefined,
            podPhase: pod?.status?.phase,
          })
        }
      }
    }
  }

  return out
}

/** kube-proxy's mode and pod network from its ConfigMap ("" means iptables on Linux). */
export function proxyConfig(configConf: string | undefined): {mode?: ProxyMode; clusterCidrs: Cidr[]} {
  if (!configConf) return {clusterCidrs: []}
  let config: {mode?: string; clusterCIDR?: string}
  try {
    config = (parseYaml(configConf) ?? {}) as typeof config
  } catch {
    return {clusterCidrs: []}
  }

  const mode = (config.mode || 'iptables').toLowerCase()
  return {
    mode: mode === 'iptables' || mode === 'nftables' || mode === 'ipvs' ? mode : undefined,
    clusterCidrs: (config.clusterCIDR ?? '')
      .split(',')
      .map((c) => c.trim())
      .filter(Boolean)
      .map(parseCidr),
  }
}

const internalAddress = (node: V1Node) => node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address

/** Headless, ExternalName and selector-less Services, explained rather than failed. */
function explainSpecialService(service: V1Service, endpoints: SliceEndpoint[]): string | undefined {
  const spec = service.spec ?? {}
  if (spec.type === 'ExternalName') {
    return `ExternalName Service: cluster DNS answers with a CNAME to "${spec.externalName}"; kube-proxy programs no rules for it, so there is nothing to trace on a node.`
  }

  if (spec.clusterIP === 'None') {
    const ips = [...new Set(endpoints.filter((e) => e.ready).map((e) => e.ip))]
    return `headless Service (clusterIP: None): cluster DNS returns the ready endpoints' addresses directly (${ips.join(', ') || 'none ready'}) and clients connect to them without kube-proxy; there are no rules to trace.`
  }

  return undefined
}

async function resolveService(api: TraceApi, namespace: string, name: string): Promise<V1Service> {
  try {
    return await api.getService(namespace, name)
  } catch (error) {
    if (!isNotFound(error)) throw error
    const names = (await api.listServices(namespace)).items.map((s) => s.metadata?.name ?? '')
    const close = closeMatches(name, names)
    throw new CliError(
      `service "${name}" not found in namespace "${namespace}"${close.length > 0 ? `; did you mean: ${close.join(', ')}?` : names.length === 0 ? ' (the namespace has no Services)' : ''}`,
    )
  }
}

async function kubeProxyImage(api: TraceApi): Promise<string | undefined> {
  const daemonSets = await api.listDaemonSets(SYSTEM_NAMESPACE)
  const proxy =
    daemonSets.items.find((d) => d.metadata?.name === 'kube-proxy') ?? daemonSets.items.find((d) => d.metadata?.labels?.['k8s-app'] === 'kube-proxy')
  const containers = proxy?.spec?.template?.spec?.containers ?? []
  return (containers.find((c) => c.name === 'kube-proxy') ?? containers[0])?.image
}

/** Picks the nodes to read: --node, --all-nodes, or the Ready node hosting the most endpoints. */
export function chooseNodes(nodes: V1Node[], endpoints: SliceEndpoint[], opts: {node?: string; allNodes?: boolean}): V1Node[] {
  if (opts.node) {
    const node = nodes.find((n) => n.metadata?.name === opts.node)
    if (!node) throw new CliError(`node "${opts.node}" not found; nodes: ${nodes.map((n) => n.metadata?.name).join(', ')}`)
    return [node]
  }

  const ready = nodes.filter(isReady)
  if (ready.length === 0) throw new CliError('no Ready node to read kube-proxy rules from; pass --node to read one anyway')
  if (opts.allNodes) return ready
  return [nodesByPreference(ready, endpoints)[0]]
}

/**
 * Ready nodes, best first: the most ready endpoints hosted (the node whose local-traffic rules
 * matter most), then workers before control-plane nodes (a Service like `kubernetes`, whose
 * endpoints are no pods, is reached from workers; and some clusters run no kube-proxy on
 * control-plane nodes), then the API's order.
 */
export function nodesByPreference(ready: V1Node[], endpoints: SliceEndpoint[]): V1Node[] {
  const hosted = (n: V1Node) => new Set(endpoints.filter((e) => e.ready && e.nodeName === n.metadata?.name).map((e) => e.ip)).size
  return ready
    .map((node, index) => ({node, index, hosted: hosted(node), controlPlane: isControlPlaneNode(node) ? 1 : 0}))
    .sort((a, b) => b.hosted - a.hosted || a.controlPlane - b.controlPlane || a.index - b.index)
    .map((n) => n.node)
}

/** A node where kube-proxy has programmed nothing: without --node, trace tries the next node. */
class NoKubeProxyRules extends CliError {}

/** How many nodes a trace without --node tries before it gives up on finding kube-proxy's rules. */
const NODES_TO_TRY = 3

/**
 * The `ipvsadm -Ln` options naming each virtual server of the Service's ports: its ClusterIPs,
 * externalIPs and LoadBalancer IPs, and the node's own address for a NodePort.
 */
export function ipvsQueries(service: ServiceInfo, nodeAddress?: string): string[] {
  const flags: Record<string, string> = {tcp: '-t', udp: '-u', sctp: '--sctp-service'}
  const hostPort = (ip: string, port: number) => (ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`)
  const queries: string[] = []
  for (const port of service.ports) {
    const flag = flags[port.protocol.toLowerCase()]
    if (!flag) continue
    for (const ip of [...service.clusterIPs, ...service.externalIPs, ...service.loadBalancerIPs]) queries.push(`${flag} ${hostPort(ip, port.port)}`)
    if (port.nodePort && nodeAddress) queries.push(`${flag} ${hostPort(nodeAddress, port.nodePort)}`)
  }

  return [...new Set(queries)]
}

/** Runs the read-rules task on one node and returns its listings. */
async function readNodeRules(api: TraceApi, node: string, opts: LiveTraceOptions, image: string, ipvs: string[]): Promise<RuleSections> {
  opts.onProgress?.(`reading kube-proxy rules on node ${node} (image ${image})`)
  const result = await runNodeTask(
    api,
    {
      node,
      image,
      command: ['sh', '-c', serviceRulesScript(opts.namespace, opts.name, ipvs)],
      purpose: 'trace',
      namespace: opts.debugNamespace ?? SYSTEM_NAMESPACE,
      deadlineSeconds: opts.deadlineSeconds ?? 120,
    },
    opts.task,
  )
  if (result.exitCode !== 0) {
    const tail = result.output.trim().split('\n').slice(-3).join(' | ')
    if (result.exitCode > 128) {
      const signal = result.exitCode - 128
      const why = signal === 9 ? "SIGKILL: out of memory, or the pod's deadline (--timeout)" : signal === 11 ? 'SIGSEGV: the tool crashed' : `signal ${signal}`
      throw new CliError(`reading rules on node ${node} failed: the task was killed (exit code ${result.exitCode}, ${why}): ${tail || 'no output'}`)
    }

    throw new CliError(
      `reading rules on node ${node} failed (exit code ${result.exitCode}): ${tail || 'no output'}; does image ${image} have sh and iptables/nft? (--image)`,
    )
  }

  if (!result.output.trimStart().startsWith(SECTION_MARK)) {
    throw new CliError(
      `the rules read on node ${node} arrived incomplete (the pod log does not start with the first section: over the kubelet's container log size limit?)`,
    )
  }

  if (!result.output.includes(`${SECTION_MARK}end`)) throw new CliError(`the rules read on node ${node} arrived cut short (no end marker in the pod log)`)
  const sections = splitSections(result.output)
  for (const crash of sections.crashes ?? []) {
    opts.onProgress?.(
      `note: ${crash.command} died on node ${node} (exit code ${crash.exitCode}${crash.exitCode === 139 ? ', a segfault' : ''}); ${sections.partial ? 'read the chains one by one instead' : 'trying the other readers'}`,
    )
  }

  return sections
}

/** Traces a Service on live nodes: resolve it, read the rules through node tasks, compare. */
export async function traceLive(api: TraceApi, opts: LiveTraceOptions): Promise<MultiNodeTrace> {
  const service = await resolveService(api, opts.namespace, opts.name)
  const slices = (await api.listEndpointSlices(opts.namespace, `kubernetes.io/service-name=${opts.name}`)).items
  const hasPods = slices.some((s) => s.endpoints?.some((e) => e.targetRef?.kind === 'Pod'))
  const pods = hasPods ? (await api.listPods(opts.namespace)).items : []
  const endpoints = sliceEndpoints(slices, pods)
  const info = serviceInfoOf(service)
  const explanation = explainSpecialService(service, endpoints)
  if (explanation) {
    return {
      nodes: [{service: {...info, clusterIPs: info.clusterIPs}, mode: opts.mode ?? 'iptables', explanation, ports: [], findings: [], notes: []}],
      differences: [],
      findings: [],
    }
  }

  const notes: string[] = []
  if (!service.spec?.selector || Object.keys(service.spec.selector).length === 0) {
    notes.push(
      'the Service has no selector: its endpoints come from EndpointSlices (or Endpoints) someone manages by hand or by another controller; kube-proxy routes to them all the same',
    )
  }

  const ports = selectPorts(info, opts.port)
  const configMap = await api.getConfigMap(SYSTEM_NAMESPACE, 'kube-proxy')
  const config = proxyConfig(configMap?.data?.['config.conf'])
  const image = opts.image ?? (await kubeProxyImage(api))
  if (!image) {
    throw new CliError(
      'no kube-proxy DaemonSet in kube-system to borrow an image from (is kube-proxy replaced, e.g. by Cilium, or run as static pods?); pass --image with an image that has sh and iptables/nft',
    )
  }

  const allNodes = (await api.listNodes()).items
  const nodes = chooseNodes(allNodes, endpoints, opts)
  if (!opts.node && !opts.allNodes)
    return traceFirstWithRules(api, nodesByPreference(allNodes.filter(isReady), endpoints), {opts, image, info: {...info, ports}, endpoints, config, notes})
  const results: TraceResult[] = []
  const unreadable: Finding[] = []
  for (const node of nodes) {
    try {
      results.push(await traceNode(api, node, {opts, image, info: {...info, ports}, endpoints, config, notes}))
    } catch (error) {
      // One node without kube-proxy is exactly what --all-nodes is for: say so, trace the rest.
      if (!opts.allNodes || !(error instanceof CliError)) throw error
      unreadable.push({kind: 'node-unreadable', message: error.message})
    }
  }

  if (results.length === 0) throw new CliError(`no node could be traced: ${unreadable.map((f) => f.message).join('; ')}`)
  if (nodes.length === 1) return {nodes: results, differences: [], findings: results[0].findings}
  const compared = compareNodes(results)
  return {...compared, findings: [...unreadable, ...compared.findings]}
}

/** No node named: trace the preferred node, or the next ones when kube-proxy left no rules there. */
async function traceFirstWithRules(api: TraceApi, candidates: V1Node[], inputs: NodeTraceInputs): Promise<MultiNodeTrace> {
  const skipped: string[] = []
  for (const node of candidates.slice(0, NODES_TO_TRY)) {
    try {
      const result = await traceNode(api, node, inputs)
      if (skipped.length > 0) result.notes.push(`${skipped.join('; ')}: traced node ${result.node} instead (--node picks one)`)
      return {nodes: [result], differences: [], findings: result.findings}
    } catch (error) {
      if (!(error instanceof NoKubeProxyRules) || candidates.length === 1) throw error
      skipped.push(error.message.replace(/; is kube-proxy running there\?$/, ''))
      inputs.opts.onProgress?.(`${error.message}; trying another node`)
    }
  }

  throw new CliError(`no kube-proxy rules on the ${skipped.length} nodes tried (${skipped.join('; ')}); is kube-proxy running? (--node picks a node)`)
}

type ModeSource = NonNullable<TraceResult['modeSource']>

/** The first of --mode, kube-proxy's own answer, its ConfigMap, the rules' look (else iptables). */
export function modeOf(flag?: ProxyMode, running?: ProxyMode, configured?: ProxyMode, looks?: ProxyMode): [ProxyMode, ModeSource] {
  if (flag) return [flag, 'flag']
  if (running) return [running, 'kube-proxy']
  if (configured) return [configured, 'configmap']
  return [looks ?? 'iptables', 'rules']
}

interface NodeTraceInputs {
  opts: LiveTraceOptions
  image: string
  info: ServiceInfo
  endpoints: SliceEndpoint[]
  config: {mode?: ProxyMode; clusterCidrs: Cidr[]}
  notes: string[]
}

async function traceNode(api: TraceApi, node: V1Node, {opts, image, info, endpoints, config, notes}: NodeTraceInputs): Promise<TraceResult> {
  const name = node.metadata?.name ?? ''
  const sections = await readNodeRules(api, name, opts, image, ipvsQueries(info, internalAddress(node)))
  const detected = detectMode(sections)
  // The running kube-proxy's own answer beats its ConfigMap (flags can override the file).
  const [mode, modeSource] = modeOf(opts.mode, sections.proxyMode, config.mode, detected)
  const noRules = new NoKubeProxyRules(
    `node ${name} has no kube-proxy rules in ${mode} mode${detected && detected !== mode ? ` (its rules look like ${detected} mode: try --mode ${detected})` : ''}; is kube-proxy running there?`,
  )
  const listing = {iptables: sections.iptables, nftables: sections.nft, ipvs: sections.ipvs}[mode]
  if (!listing?.trim()) throw noRules
  let rules: RuleSet
  try {
    rules = ruleSetFor(sections, mode)
  } catch (error) {
    throw error instanceof CliError ? new CliError(`node ${name}: ${error.message}`) : error
  }

  if (!rules.hasKubeProxyRules()) throw noRules

  const result = traceService(rules, info, {
    node: name,
    nodeAddress: internalAddress(node),
    slices: endpoints,
    clusterCidrs: config.clusterCidrs,
    backend: sections.iptablesCommand && mode !== 'nftables' ? sections.iptablesCommand : undefined,
  })
  result.notes.push(...notes)
  if (sections.partial && mode !== 'nftables') {
    result.notes.push(
      `a big node: only the chains this Service reaches were read (${sections.iptablesCommand} -S, following jumps from the hooks), not the whole iptables-save`,
    )
  }

  if (sections.nftPartial && mode === 'nftables') {
    result.notes.push(
      "a big node: kube-proxy's nftables table was trimmed on the node to this Service's chains, set and map elements and kube-proxy's generic chains",
    )
  }

  if (sections.ipvsPartial && mode === 'ipvs') result.notes.push("a big node: only this Service's virtual servers were listed (ipvsadm -Ln -t/-u ADDRESS:PORT)")

  for (const crash of sections.crashes ?? [])
    result.notes.push(`${crash.command} died on the node (exit code ${crash.exitCode}${crash.exitCode === 139 ? ': a segfault' : ''})`)
  result.modeSource = modeSource
  if (!opts.mode && config.mode && config.mode !== mode) {
    result.findings.push({
      kind: 'mode-mismatch',
      message: `kube-proxy's ConfigMap says mode ${config.mode}, but kube-proxy on node ${name} runs in ${mode} mode`,
    })
  } else if (!opts.mode && detected && detected !== mode) {
    result.findings.push({kind: 'mode-mismatch', message: `kube-proxy on node ${name} should run in ${mode} mode, but its rules look like ${detected} mode`})
  }

  return result
}
