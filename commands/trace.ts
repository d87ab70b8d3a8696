import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {ExitCode} from '../src/errors.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Trace extends SelfhostCommand {
  static summary = "Show how kube-proxy routes a Service on a node: chains, endpoints and each one's share"
  static description = `Reads kube-proxy's rules on a node through a short-lived privileged pod (deleted afterwards,
with activeDeadlineSeconds), follows a packet for every port and address of the Service
(ClusterIP, NodePort, externalIPs, LoadBalancer IPs; from a pod and from outside) and shows the
chains, the endpoints it reaches with their shares, masquerading and session affinity.
Works in iptables (nft or legacy backend), nftables and IPVS mode. With --from-file it reads a
saved dump (iptables-save, nft list table ip kube-proxy, ipvsadm -Ln) and needs no cluster.
Exits 0 when the rules agree with the EndpointSlices, 2 on findings (ready endpoints missing from
the rules, stale endpoints, shares not adding up to 100%, a Service with endpoints but no rules),
1 on errors.`

  static examples = [
    '<%= config.bin %> trace svc/web -n shop',
    '<%= config.bin %> trace web --port http --node worker-2',
    '<%= config.bin %> trace svc/web --all-nodes -o json',
    'iptables-save > node.txt; <%= config.bin %> trace --from-file node.txt svc/shop/web',
    '<%= config.bin %> trace --from-file ipvs.txt 10.96.0.10:53',
  ]

  static args = {
    service: Args.string({description: 'svc/NAME, NAME, svc/NAMESPACE/NAME, or (with --from-file) IP[:PORT]', required: true}),
  }

  static flags = {
    ...clusterFlags,
    namespace: Flags.string({char: 'n', description: "namespace of the Service (default: the context's)"}),
    port: Flags.string({description: 'trace only this port (name or number)'}),
    node: Flags.string({description: 'node to read the rules on (default: a Ready node, preferably one hosting an endpoint)', exclusive: ['all-nodes']}),
    'all-nodes': Flags.boolean({description: 'trace on every Ready node and show where they differ'}),
    image: Flags.string({description: "image of the node pod (default: the cluster's kube-proxy image, already on every node)"}),
    'debug-namespace': Flags.string({description: 'namespace of the node pod; must allow privileged pods', default: 'kube-system'}),
    mode: Flags.string({
      description: "kube-proxy mode (default: kube-proxy's ConfigMap, else what the rules look like)",
      options: ['iptables', 'nftables', 'ipvs'],
    }),
    'from-file': Flags.string({description: 'trace a saved dump instead of a live node (no cluster needed)', exclusive: ['node', 'all-nodes', 'image']}),
    timeout: Flags.string({description: "node pod's deadline (activeDeadlineSeconds)", default: '2m'}),
    chains: Flags.boolean({description: 'show the chain tree of every way in (as -o wide does)'}),
    output: outputFlag(['table', 'wide', 'json', 'yaml']),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Trace)
    const format = this.outputFormat(flags.output, ['table', 'wide', 'json', 'yaml'])
    const view = {chains: flags.chains || format === 'wide'}
    const {parseTraceTarget} = await import('../src/trace/target.js')
    const {parseDuration} = await import('../src/duration.js')
    const target = parseTraceTarget(args.service)
    const mode = flags.mode as 'iptables' | 'nftables' | 'ipvs' | undefined
    const {renderMultiNode, renderTrace} = await import('../src/trace/render.js')

    if (flags['from-file']) {
      const {traceDumpFile} = await import('../src/trace/offline.js')
      const results = traceDumpFile(flags['from-file'], target, {mode, port: flags.port, namespace: flags.namespace ?? 'default'})
      const result = results.length === 1 ? results[0] : results
      this.log(isMachineFormat(format) ? await renderData(result, format) : results.map((r) => renderTrace(r, view)).join('\n\n'))
      if (results.some((r) => r.findings.length > 0)) this.exit(ExitCode.unhealthy)
      return
    }

    if (target.kind === 'address') this.error('an address target needs --from-file; on a live cluster name the Service (svc/NAME)', {exit: ExitCode.error})
    const client = await this.connect(flags)
    const {traceLive} = await import('../src/trace/live.js')
    const trace = await traceLive(client, {
      namespace: target.namespace ?? client.namespace,
      name: target.name,
      port: flags.port,
      node: flags.node,
      allNodes: flags['all-nodes'],
      image: flags.image,
      debugNamespace: flags['debug-namespace'],
      mode,
      deadlineSeconds: Math.ceil(parseDuration(flags.timeout, '--timeout') / 1000),
      onProgress: !isMachineFormat(format) ? (m) => process.stderr.write(`${m}\n`) : undefined,
    })
    const single = trace.nodes.length === 1 && !flags['all-nodes']
    if (isMachineFormat(format)) this.log(await renderData(single ? trace.nodes[0] : trace, format))
    else this.log(single ? renderTrace(trace.nodes[0], view) : renderMultiNode(trace, view))
    if (trace.findings.length > 0 || trace.nodes.some((n) => n.findings.length > 0)) this.exit(ExitCode.unhealthy)
  }
}
