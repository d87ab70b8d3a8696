import * as Args from '@oclif/core/args'
import * as Flags from '@oclif/core/flags'
import chalk from 'chalk'

import {CONTROL_PLANE_COMPONENTS} from '../src/controlplane/model.js'
import {parseDuration} from '../src/duration.js'
import {CliError} from '../src/errors.js'
import {SelfhostCommand, clusterFlags} from './_base.js'

/** Prefix colours, one per instance, so interleaved --follow output stays readable. */
const PREFIX_COLOURS = [chalk.cyan, chalk.green, chalk.magenta, chalk.yellow, chalk.blue, chalk.red]

export default class Logs extends SelfhostCommand {
  static summary = 'Print the logs of every instance of a control-plane component, each line prefixed [node/pod]'
  static description = `Works alike for static (mirror) pods and self-hosted workloads. Without --tail, shows the last
10 lines of each instance (as kubectl does for several pods); --tail -1 shows everything.`
  static examples = [
    '<%= config.bin %> logs kube-scheduler --leader -f',
    '<%= config.bin %> logs kube-apiserver --since 10m --timestamps',
    '<%= config.bin %> logs kube-controller-manager --previous --tail 50',
  ]
  static args = {
    component: Args.string({description: `one of: ${CONTROL_PLANE_COMPONENTS.join(', ')}`}),
  }

  static flags = {
    ...clusterFlags,
    leader: Flags.boolean({description: 'only the instance that currently holds the leader lock'}),
    follow: Flags.boolean({char: 'f', description: 'stream new lines from every instance until Ctrl-C'}),
    tail: Flags.integer({description: "lines from the end of each instance's log (-1: all)", default: 10, min: -1}),
    since: Flags.string({description: 'only lines newer than this duration (e.g. 30s, 5m, 1h)'}),
    previous: Flags.boolean({char: 'p', description: "the previous (crashed or restarted) container's log"}),
    timestamps: Flags.boolean({description: 'prefix each line with its timestamp'}),
    container: Flags.string({char: 'c', description: "read this container instead of the component's own"}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Logs)
    // Validate what needs no cluster before connecting to one.
    const {parseComponentName, planLogTargets} = await import('../src/logs/plan.js')
    if (!args.component) throw new CliError(`name a component; known components: ${CONTROL_PLANE_COMPONENTS.join(', ')}`)
    const component = parseComponentName(args.component)
    const sinceSeconds = flags.since === undefined ? undefined : Math.max(1, Math.ceil(parseDuration(flags.since, '--since') / 1000))

    const client = await this.connect(flags)
    const {discoverControlPlane} = await import('../src/controlplane/discover.js')
    const {readLogs} = await import('../src/logs/stream.js')
    const plane = await discoverControlPlane(client)
    const targets = planLogTargets(plane, {component, leader: flags.leader, container: flags.container})

    const colourOf = new Map(targets.map((t, i) => [t.pod, PREFIX_COLOURS[i % PREFIX_COLOURS.length]]))
    await this.withInterrupt(async (signal, stop) => {
      // A reader that went away (`| head`) is an ordinary end, like Ctrl-C.
      const onStdoutError = (error: NodeJS.ErrnoException) => {
        if (error.code === 'EPIPE') stop()
      }

      process.stdout.on('error', onStdoutError)
      try {
        const result = await readLogs(
          client,
          targets,
          {
            follow: flags.follow,
            tailLines: flags.tail < 0 ? undefined : flags.tail,
            sinceSeconds,
            previous: flags.previous,
            timestamps: flags.timestamps,
            signal,
          },
          {
            line: (target, text) => {
              if (!signal.aborted) process.stdout.write(`${colourOf.get(target.pod)!(target.prefix)} ${text}\n`)
            },
            notice: (target, message) => process.stderr.write(`${target.prefix} ${message}\n`),
          },
        )
        if (result.read === 0 && !signal.aborted) {
          throw new CliError(`could not read the log of any ${component} instance`)
        }
      } finally {
        process.stdout.removeListener('error', onStdoutError)
      }
    })
  }
}
