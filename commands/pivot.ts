import * as Flags from '@oclif/core/flags'

import {CliError} from '../src/errors.js'
import {parseDuration} from '../src/duration.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Pivot extends SelfhostCommand {
  static summary = 'Move kube-apiserver, kube-controller-manager and kube-scheduler from static pods into self-hosted workloads'
  static description = `kube-apiserver becomes a DaemonSet on the control-plane nodes; kube-controller-manager and
kube-scheduler become Deployments spread one per control-plane node with a PodDisruptionBudget. etcd stays static.
Node by node: apply, wait until the new pod is Ready, move the static manifest into
/etc/kubernetes/selfhost/backup/<timestamp>/ on the node, wait for the mirror pod to go and the API to be healthy.
The apiserver hand-off is guarded on the node itself: if the local apiserver is not healthy in time, the node task
puts the static manifest back without needing the API (exit code 3 after a full revert).
Then each control-plane node gets checkpoints of its self-hosted pods and a static checkpointer pod that starts them
when no kube-apiserver listens there (after a power loss), and retires them once the self-hosted pods serve again.
Re-run it after an interruption: it reads what is done from the cluster and the nodes and finishes the job.
--dry-run prints the plan (it reads the manifests on the nodes with short-lived read-only pods; --from-mirror-pods
plans from the mirror pods instead, starting no pod); -o yaml prints only the objects. --from-dir plans from a copy of /etc/kubernetes/manifests with no cluster at all.`
  static examples = [
    '<%= config.bin %> pivot --dry-run',
    '<%= config.bin %> pivot --dry-run -o yaml > self-hosted.yaml',
    '<%= config.bin %> pivot --from-dir ./manifests --dry-run -o yaml',
    '<%= config.bin %> pivot',
  ]
  static flags = {
    ...clusterFlags,
    'dry-run': Flags.boolean({description: 'print the plan and change nothing', default: false}),
    'from-dir': Flags.string({description: 'plan from a directory of static manifests (one node, or one subdirectory per node); needs --dry-run'}),
    'from-mirror-pods': Flags.boolean({
      description: 'with --dry-run: plan from the mirror pods alone, starting no node pods (hashes are then of the mirror pods)',
      default: false,
    }),
    node: Flags.string({description: "with --from-dir holding one node's files: the node name to use", default: 'control-plane'}),
    image: Flags.string({
      description: "image for the node tasks (default: the cluster's kube-proxy image, already on every node; needs sh, cat, ln, rm, sleep, wc)",
    }),
    namespace: Flags.string({description: 'namespace for the node task pods (must allow privileged pods)', default: 'kube-system'}),
    timeout: Flags.string({description: 'how long each wait (pod Ready, mirror pod gone, API healthy) may take', default: '5m'}),
    'handoff-deadline': Flags.string({
      description: 'how long the node-side watchdog waits for this CLI to confirm the new apiserver serves before it restores the static one',
      default: '3m',
    }),
    'no-checkpoint': Flags.boolean({
      description: 'do not install checkpoints and the checkpointer: a full control-plane restart then needs recovery by hand (the plan says how)',
      default: false,
    }),
    'force-blind-handoff': Flags.boolean({
      description:
        'hand off without port sharing even where the version has it (the path of clusters before 1.19: the API is away until the new instance binds)',
      default: false,
      hidden: true,
    }),
    output: outputFlag(['table', 'json', 'yaml']),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Pivot)
    const format = this.outputFormat(flags.output, ['table', 'json', 'yaml'])
    const timeoutMs = parseDuration(flags.timeout, '--timeout')
    const handoffDeadlineSeconds = Math.round(parseDuration(flags['handoff-deadline'], '--handoff-deadline') / 1000)
    if (flags['from-dir'] && !flags['dry-run']) throw new CliError('--from-dir only plans: add --dry-run (pivot itself reads the manifests from the nodes)')
    if (isMachineFormat(format) && !flags['dry-run']) throw new CliError(`-o ${format} prints the planned objects: add --dry-run`)
    const {renderObjectsYaml, renderPivotPlan} = await import('../src/render/pivot.js')
    const print = async (plan: import('../src/pivot/plan.js').PivotPlan, alreadyDone: string[]) => {
      if (format === 'yaml') this.log(renderObjectsYaml(plan.objects))
      else if (format === 'json') this.log(await renderData({apiVersion: 'v1', kind: 'List', items: plan.objects}, 'json'))
      else this.log(renderPivotPlan(plan, alreadyDone, true))
    }

    if (flags['from-dir']) {
      const {readManifestDir} = await import('../src/pivot/from-dir.js')
      const {planPivot} = await import('../src/pivot/plan.js')
      await print(planPivot({manifests: readManifestDir(flags['from-dir'], flags.node), handoffDeadlineSeconds, checkpoint: !flags['no-checkpoint']}), [])
      return
    }

    const client = await this.connect(flags)
    const {connectPivotRunner} = await import('../src/pivot/execute.js')
    const result = await this.withProgress(async (step) => {
      const runner = await connectPivotRunner(
        client,
        {
          dryRun: flags['dry-run'],
          fromMirrorPods: flags['from-mirror-pods'],
          image: flags.image,
          namespace: flags.namespace,
          timeoutMs,
          handoffDeadlineSeconds,
          forceBlindHandoff: flags['force-blind-handoff'],
          checkpoint: !flags['no-checkpoint'],
        },
        step,
      )
      return runner.pivot()
    })
    if (result.dryRun) {
      await print(result.plan, result.alreadyDone)
      return
    }

    this.log(result.outcome === 'completed' ? 'Pivot complete: the control plane is self-hosted.' : 'Pivot rolled back: the static control plane is restored.')
    for (const line of result.summary) this.log(`  ${line}`)
    this.log(`  ${result.plan.costs[0]}`)
    if (result.exitCode !== 0) this.exit(result.exitCode)
  }
}
