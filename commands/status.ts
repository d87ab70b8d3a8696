import {ExitCode} from '../src/errors.js'
import {isMachineFormat, renderData} from '../src/render/output.js'
import {SelfhostCommand, clusterFlags, outputFlag} from './_base.js'

export default class Status extends SelfhostCommand {
  static summary = 'Show every control-plane component: how it runs, instances, versions, leader and health'
  static description = `Reads the cluster with a fixed, small number of requests however large it is.
Exits 0 when healthy, 2 when a component is unhealthy or a leader is stale, 1 when the cluster cannot be read.`
  static aliases = ['health']
  static examples = ['<%= config.bin %> status', '<%= config.bin %> status -o wide', '<%= config.bin %> health -o json']
  static flags = {...clusterFlags, output: outputFlag()}

  async run(): Promise<void> {
    const {flags} = await this.parse(Status)
    const format = this.outputFormat(flags.output)
    const client = await this.connect(flags)
    // Loaded here, not at the top: --help must not pay for them.
    const {discoverControlPlane} = await import('../src/controlplane/discover.js')
    const plane = await discoverControlPlane(client)
    if (isMachineFormat(format)) {
      this.log(await renderData(plane, format))
    } else {
      const {renderStatus} = await import('../src/render/status.js')
      // On a terminal, long problems and warnings wrap to its width; piped output keeps one line each for grep.
      this.log(renderStatus(plane, format === 'wide', process.stdout.isTTY ? process.stdout.columns : undefined))
    }

    if (!plane.healthy) this.exit(ExitCode.unhealthy)
  }
}
