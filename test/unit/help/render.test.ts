import assert from 'node:assert/strict'

import {HelpContext, HelpManifest, helpRequest, renderCommandHelp, renderRootHelp, unknownCommandLine} from '../../../src/help/render.js'
import {loadSourcePlugin} from '../../helpers/run-command.js'

const ctx: HelpContext = {
  bin: 'kubectl-selfhost',
  version: '0.1.0',
  description: 'Run a control plane',
  userAgent: 'kubectl-selfhost/0.1.0 linux-x64 node-v20',
  width: 80,
}

describe('help from the manifest (no oclif at startup)', () => {
  let manifest: HelpManifest
  before(async function () {
    this.timeout(60_000)
    manifest = (await loadSourcePlugin()).manifest as unknown as HelpManifest
  })

  it('decides which argv it answers and leaves the rest to oclif', () => {
    const kind = (argv: string[]) => {
      const r = helpRequest(manifest, argv)
      if (r === undefined) return 'oclif'
      return r.kind === 'command' ? r.command.id : r.kind === 'unknown' ? `unknown ${r.word}` : 'root'
    }

    const cases: Array<[string[], string]> = [
      [[], 'root'],
      [['--help'], 'root'],
      [['-h'], 'root'],
      [['help'], 'root'],
      [['help', 'logs'], 'logs'],
      [['status', '--help'], 'status'],
      [['health', '-h'], 'status'],
      [['logs', 'etcd', '-f', '--help'], 'logs'],
      [['status'], 'oclif'],
      [['status', '-o', 'json'], 'oclif'],
      [['nope', '--help'], 'unknown nope'],
      [['help', 'nope'], 'unknown nope'],
      [['stat'], 'unknown stat'],
      [['logs', '--', '--help'], 'oclif'],
    ]
    for (const [argv, expected] of cases) assert.equal(kind(argv), expected, argv.join(' '))
  })

  it('names the known commands when one does not exist, in one line', () => {
    const line = unknownCommandLine(manifest, 'stat')
    assert.match(line, /^error: unknown command "stat"; commands: .*\bhealth\b.*\blogs\b.*\bstatus\b/)
    assert.equal(line.includes('\n'), false)
  })

  it("every command's help shows its usage, every visible flag and argument, aliases and examples", () => {
    for (const command of Object.values(manifest.commands)) {
      const text = renderCommandHelp(ctx, command)
      assert.match(text, new RegExp(`^USAGE\\n  \\$ kubectl-selfhost ${command.id}`, 'm'), command.id)
      for (const flag of Object.values(command.flags).filter((f) => !f.hidden)) {
        assert.ok(text.includes(`--${flag.name}`), `${command.id} --${flag.name}`)
        if (flag.char) assert.ok(text.includes(`-${flag.char}, --${flag.name}`), `${command.id} -${flag.char}`)
      }

      for (const arg of Object.values(command.args)) assert.ok(text.includes(arg.name.toUpperCase()), `${command.id} ${arg.name}`)
      for (const alias of command.aliases ?? []) assert.ok(text.includes(`$ kubectl-selfhost ${alias}`))
      assert.doesNotMatch(text, /<%=/, 'examples filled in')
      for (const line of text.split('\n')) assert.ok(line.length <= 80 || /^\s+\$ /.test(line), `${command.id}: line over 80 columns: ${line}`)
    }
  })

  it('status help shows option values and defaults', () => {
    const text = renderCommandHelp(ctx, manifest.commands.status)
    assert.match(text, /^ {2}-o, --output=<option> {2}\[default: table\] output format/m)
    assert.match(text, /<options: table\|wide\|json\|yaml>/)
    assert.match(text, /^CLUSTER FLAGS$/m)
  })

  it('the root help lists every command and alias', () => {
    const text = renderRootHelp(ctx, manifest)
    assert.match(text, /^VERSION\n {2}kubectl-selfhost\/0\.1\.0/m)
    for (const command of Object.values(manifest.commands)) {
      assert.match(text, new RegExp(`^  ${command.id}\\s`, 'm'), command.id)
      for (const alias of command.aliases ?? []) assert.match(text, new RegExp(`^  ${alias}\\s+alias of ${command.id}$`, 'm'))
    }
  })
})
