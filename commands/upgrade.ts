import * as Flags from '@oclif/core/flags'

import {parseDuration} from '../src/duration.js'
import {CliError} from '../src/errors.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {parseComponents} from '../src/upgrade/skew.js'
import {parseTargetVersion} from '../src/upgrade/versions.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Upgrade extends SelfhostCommand {
  static summary = 'Upgrade the self-hosted control plane: skew-checked, in order, health-gated, rolled back on failure'
  static description = `Checks the version-skew policy, then changes the image of kube-apiserver, kube-controller-manager,
kube-scheduler and kube-proxy in that order (reversed for a downgrade), keeping the registry the cluster uses.
Each component must finish its rollout and pass its health gates (apiserver /readyz and /version; a leader lease
renewed by a new pod) within --timeout, or it is rolled back to its previous image and the run stops.
Exit codes: 0 upgraded (or nothing to do), 3 a component was rolled back and is healthy again,
1 refused, bad input, or the rollback failed too.`
  static examples = [
    '<%= config.bin %> upgrade --version v1.15.0 --dry-run',
    '<%= config.bin %> upgrade --version v1.31.2',
    '<%= config.bin %> upgrade --version v1.31.2 --components apiserver,controller-manager -o json',
    '<%= config.bin %> upgrade --version v1.25.0 --image-registry registry.k8s.io',
  ]
  static flags = {
    ...clusterFlags,
    version: Flags.string({description: 'the version to go to: v1.15.0 or 1.15.0', required: true}),
    'dry-run': Flags.boolean({description: 'show the plan and every check; change nothing', default: false}),
    plan: Flags.boolean({description: 'the same as --dry-run', default: false}),
    components: Flags.string({
      description:
        'limit the run to these (comma list): kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy (or apiserver, controller-manager, scheduler, proxy)',
    }),
    'image-registry': Flags.string({description: 'pull the new images from this registry (e.g. registry.k8s.io) instead of the one the cluster uses'}),
    force: Flags.boolean({description: 'go ahead despite skew checks marked overridable, accepting the risk each one names', default: false}),
    'allow-downgrade': Flags.boolean({description: 'allow a target older than what runs', default: false}),
    timeout: Flags.string({description: 'how long each component may take to roll out and pass its health gates before it is rolled back', default: '5m'}),
    'backup-dir': Flags.string({description: 'where to save the workloads before changing them (default ~/.kube/selfhost/backups/upgrade-<context>-<time>)'}),
    output: outputFlag(['table', 'json', 'yaml']),
  }

  async run(): Promise<void> {
    const {flags} = await this.parse(Upgrade)
    // Bad input is refused before any connection is made.
    const target = parseTargetVersion(flags.version)
    const components = flags.components === undefined ? undefined : parseComponents(flags.components)
    const timeoutMs = parseDuration(flags.timeout, '--timeout')
    const format = this.outputFormat(flags.output, ['table', 'json', 'yaml'])
    const client = await this.connect(flags)
    const {exitCodeOf, runUpgrade} = await import('../src/upgrade/execute.js')
    const {renderUpgradePlan, renderUpgradeResult} = await import('../src/render/upgrade.js')
    const {checkpointRefresher} = await import('../src/checkpoint/install.js')
    const dryRun = flags['dry-run'] || flags.plan
    // Ctrl-C stops waiting and rolls the component under way back; a second one kills.
    const {plan, result} = await this.withInterrupt((signal) =>
      this.withProgress((progress) =>
        runUpgrade(client, {
          target,
          components,
          imageRegistry: flags['image-registry'],
          force: flags.force,
          allowDowngrade: flags['allow-downgrade'],
          dryRun,
          // The plan is shown before anything changes; stderr keeps -o json|yaml parseable.
          onPlan: (p) => {
            if (!isMachineFormat(format)) process.stderr.write(`${renderUpgradePlan(p)}\n\n`)
          },
          execute: {timeoutMs, backupDir: flags['backup-dir'], onProgress: progress, signal, refreshCheckpoints: checkpointRefresher(client, progress)},
        }),
      ),
    )
    if (isMachineFormat(format)) this.log(await renderData(result ? {plan, result} : {plan}, format))
    else this.log(result ? renderUpgradeResult(result) : renderUpgradePlan(plan))
    if (dryRun && !plan.allowed) throw new CliError(plan.refusal ?? 'refused')
    if (result) {
      const code = exitCodeOf(result)
      if (code !== 0) this.exit(code)
    }
  }
}
