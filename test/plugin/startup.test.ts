import assert from 'node:assert/strict'
import {mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {execa} from 'execa'

import {ensureBuilt, repoRoot} from '../helpers/build.js'

/**
 * Startup speed rests on one rule: help never loads @oclif/core (it costs more than node's own
 * start). `npm run bench` measures the figures; this proves the rule on the built package.
 */
describe('startup', function () {
  this.timeout(120_000)
  let probe: string
  before(async () => {
    await ensureBuilt()
    probe = join(mkdtempSync(join(tmpdir(), 'selfhost-probe-')), 'probe.cjs')
    // @oclif/core sets globalThis.oclif when it loads, from node_modules or from the bundle (bin/bundle.mjs).
    writeFileSync(probe, "process.on('exit', () => process.stderr.write(`oclif-loaded=${globalThis.oclif !== undefined}\\n`))\n")
  })

  const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
    execa(process.execPath, ['-r', probe, join(repoRoot, 'bin', 'run.js'), ...args], {env: {...process.env, ...env}, reject: false})

  for (const args of [['--help'], ['status', '--help'], ['logs', '-h'], ['help', 'status'], ['--version']]) {
    it(`\`${args.join(' ')}\` answers without loading oclif`, async () => {
      const {stdout, stderr, exitCode} = await run(args)
      assert.equal(exitCode, 0)
      assert.ok(stdout.length > 0)
      assert.match(stderr, /oclif-loaded=false/)
    })
  }

  it('an unknown command is one line and exit 1, without loading oclif', async () => {
    const {stdout, stderr, exitCode} = await run(['stat'])
    assert.equal(exitCode, 1)
    assert.equal(stdout, '')
    assert.match(stderr, /^error: unknown command "stat"; commands: .*\bstatus\b.*\noclif-loaded=false$/)
  })

  it('a real command goes through oclif (and its errors stay one line)', async () => {
    const {stderr, exitCode} = await run(['status'], {KUBECONFIG: '/nonexistent/config'})
    assert.equal(exitCode, 1)
    assert.equal(stderr, 'error: none of the files in KUBECONFIG (/nonexistent/config) exist; fix KUBECONFIG or pass --kubeconfig\noclif-loaded=true')
  })
})
