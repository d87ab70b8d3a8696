import {join} from 'node:path'

import * as Args from '@oclif/core/args'

import {COMPLETION_SHELLS, CompletionShell, completionScript} from '../src/completion/scripts.js'
import {SelfhostCommand} from './_base.js'

export default class Completion extends SelfhostCommand {
  static summary = 'Print a shell completion script for kubectl-selfhost (bash or zsh)'
  static description = `kubectl selfhost <TAB> needs no script: kubectl >= 1.26 asks kubectl_complete-selfhost,
which this package installs next to kubectl-selfhost. This script completes the binary itself.`
  static examples = [
    'source <(<%= config.bin %> completion bash)',
    'source <(<%= config.bin %> completion zsh)',
    '<%= config.bin %> completion bash > /etc/bash_completion.d/kubectl-selfhost',
  ]
  static args = {
    shell: Args.string({description: 'the shell to print the script for', options: [...COMPLETION_SHELLS], required: true}),
  }

  async run(): Promise<void> {
    const {args} = await this.parse(Completion)
    const completer = join(this.config.root, 'bin', 'complete.js')
    this.log(completionScript(args.shell as CompletionShell, process.execPath, completer).trimEnd())
  }
}
