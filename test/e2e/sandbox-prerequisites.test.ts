import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {chmodSync, mkdtempSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {repoRoot} from '../helpers/build.js'
import {inCI} from '../helpers/ci.js'

/**
 * A fresh machine without the Debian packages the sandbox runs: as an ordinary user, the
 * sandbox says in one line what to install, before it builds anything, instead of failing later
 * (a timeout, a stack trace). Run as user "nobody" with a PATH that hides everything but bash
 * and node (root would install the packages instead).
 */
describe('sandbox on a machine without its packages', function () {
  this.timeout(60_000)

  for (const mode of [[], ['--real']]) {
    it(`refuses up front, in one line, naming the packages (${mode.length > 0 ? 'real nodes' : 'kwok'})`, function () {
      if (process.getuid?.() !== 0) {
        if (inCI()) throw new Error('this test needs root (it runs the sandbox as user nobody)')
        this.skip()
      }

      const bin = mkdtempSync(join(tmpdir(), 'sandbox-path-'))
      chmodSync(bin, 0o755)
      for (const tool of ['bash', 'node']) symlinkSync(spawnSync('sh', ['-c', `command -v ${tool}`], {encoding: 'utf8'}).stdout.trim(), join(bin, tool))
      const started = Date.now()
      const run = spawnSync(
        'setpriv',
        [
          '--reuid',
          '65534',
          '--regid',
          '65534',
          '--clear-groups',
          'env',
          `PATH=${bin}`,
          'HOME=/tmp',
          'node',
          '--import',
          'tsx',
          join(repoRoot, 'test/e2e/cluster/sandbox.ts'),
          ...mode,
          'status',
        ],
        {encoding: 'utf8', cwd: repoRoot},
      )
      assert.equal(run.status, 1, run.stderr)
      const lines = run.stderr.trim().split('\n')
      assert.equal(lines.length, 1, run.stderr)
      assert.match(
        lines[0],
        /^sandbox: needs these Debian packages first: .*\bsocat\b.*\bcontainerd\b.*; install them \(apt-get install .*\) or run the sandbox as root, which installs them itself$/,
      )
      assert.doesNotMatch(run.stderr, /at .*\.ts:\d+/, 'no stack trace')
      assert.ok(Date.now() - started < 30_000, 'refused before building anything')
    })
  }
})
