import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'

import {parseDuration} from '../src/duration.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {parseReplicas, resolveComponent} from '../src/scale/plan.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Scale extends SelfhostCommand {
  static summary = 'Scale a self-hosted kube-scheduler or kube-controller-manager, aware of leader election'
  static description = `Only the lease holder works; extra replicas are standbys that take over when it fails.
Refuses more than one replica when leader election is off, and 0 unless --force (nothing would schedule
or recreate the component). kube-apiserver is a DaemonSet that follows the control-plane nodes: the command
explains how to add or remove one instead. Static components need \`pivot\` first.
After the change it waits for the replicas to be Ready, shows the leader and the standbys, and checks that
the lease keeps being renewed; if either fails it scales back to the previous count (exit code 3).`
  static examples = [
    '<%= config.bin %> scale scheduler --replicas 3 --dry-run',
    '<%= config.bin %> scale kube-controller-manager --replicas 2',
    '<%= config.bin %> scale scheduler --replicas 1 -o json',
  ]
  static args = {
    component: Args.string({
      description: 'kube-scheduler (scheduler), kube-controller-manager (controller-manager) or kube-apiserver (apiserver)',
      required: true,
    }),
  }
  static flags = {
    ...clusterFlags,
    replicas: Flags.string({description: 'the number of replicas wanted (0 needs --force)', required: true}),
    force: Flags.boolean({description: 'allow 0 replicas, which leaves nothing to schedule pods or run controllers', default: false}),
    'dry-run': Flags.boolean({description: 'show the change and its effect on leadership without making it', default: false}),
    timeout: Flags.string({description: 'how long the new replicas may take to become Ready before the change is rolled back', default: '5m'}),
    output: outputFlag(['table', 'json', 'yaml']),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Scale)
    // Bad input is refused before any connection is made.
    const component = resolveComponent(args.component)
    const replicas = parseReplicas(flags.replicas)
    const timeoutMs = parseDuration(flags.timeout, '--timeout')
    const format = this.outputFormat(flags.output, ['table', 'json', 'yaml'])
    const client = await this.connect(flags)
    const {scaleComponent} = await import('../src/scale/execute.js')
    const {renderOutcome, renderPlan} = await import('../src/render/scale.js')
    const result = await this.withProgress((step) =>
      scaleComponent(client, {
        component,
        replicas,
        force: flags.force,
        dryRun: flags['dry-run'],
        timeoutMs,
        // The plan shows before anything changes, so its warnings are seen even if the change fails.
        onPlan(plan, dryRun) {
          if (!isMachineFormat(format)) process.stdout.write(`${renderPlan({plan, dryRun})}\n`)
        },
        onProgress: step,
      }),
    )
    if (isMachineFormat(format)) this.log(await renderData(result, format))
    else if (!result.dryRun) this.log(`\n${renderOutcome(result)}`)
  }
}
