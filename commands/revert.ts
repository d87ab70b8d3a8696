import * as Flags from '@oclif/core/flags'

import {parseDuration} from '../src/duration.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Revert extends SelfhostCommand {
  static summary = 'Undo pivot: put the backed-up static manifests back and remove the self-hosted workloads'
  static description = `On every control-plane node, writes the manifests pivot moved into /etc/kubernetes/selfhost/backup/<timestamp>/
back into /etc/kubernetes/manifests byte for byte, waits until the static pods are Ready, then deletes the
self-hosted DaemonSet/Deployments. After an upgrade only each manifest's image line changes: the version that runs
now stays. Refuses before changing anything when a node lacks a backup or a rollout is in progress. Works on a
half-done pivot too, and can be re-run. Backups stay on the nodes, marked with a file named REVERTED.`
  static examples = ['<%= config.bin %> revert --dry-run', '<%= config.bin %> revert']
  static flags = {
    ...clusterFlags,
    'dry-run': Flags.boolean({description: 'print what would be restored and deleted, change nothing', default: false}),
    image: Flags.string({description: "image for the node tasks (default: the cluster's kube-proxy image; needs sh, cat, ln, rm, wc)"}),
    namespace: Flags.string({description: 'namespace for the node task pods (must allow privileged pods)', default: 'kube-system'}),
    timeout: Flags.string({description: 'how long each wait (static pod Ready, workload pods gone, API healthy) may take', default: '5m'}),
    output: outputFlag(['table', 'json', 'yaml']),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Revert)
    const format = this.outputFormat(flags.output, ['table', 'json', 'yaml'])
    const timeoutMs = parseDuration(flags.timeout, '--timeout')
    const client = await this.connect(flags)
    const {connectPivotRunner} = await import('../src/pivot/execute.js')
    const result = await this.withProgress(async (step) => {
      const runner = await connectPivotRunner(client, {dryRun: flags['dry-run'], image: flags.image, namespace: flags.namespace, timeoutMs}, step)
      return runner.revert()
    })
    if (isMachineFormat(format)) {
      // The backups' bytes are on the nodes; the machine view names them, and any image kept over the backup's, without repeating them.
      const components = result.components.map((c) => ({
        ...c,
        restores: c.restores.map(({node, stamp, imageFrom, imageTo}) => ({node, stamp, ...(imageTo ? {imageFrom, imageTo} : {})})),
      }))
      this.log(await renderData({...result, components}, format))
      return
    }

    const {renderRevertPlan} = await import('../src/render/pivot.js')
    if (result.components.length === 0) {
      this.log(result.summary.join('\n') || 'nothing to revert')
      return
    }

    if (result.dryRun) {
      this.log(renderRevertPlan(result))
      return
    }

    this.log('Revert complete: the control plane runs from static manifests again.')
    for (const line of result.summary) this.log(`  ${line}`)
  }
}
