import assert from 'node:assert/strict'
import {readFileSync, readdirSync} from 'node:fs'
import {join} from 'node:path'

import {ensureBuilt, repoRoot} from '../helpers/build.js'

/**
 * oclif trusts oclif.manifest.json whenever it exists: a command missing from it does not
 * exist for users. The build must list every command file.
 */
describe('oclif.manifest.json', function () {
  this.timeout(120_000)
  before(ensureBuilt)

  it('lists every command in commands/ (files starting with _ are not commands)', () => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, {aliases?: string[]}>}
    const files = readdirSync(join(repoRoot, 'commands'))
      .filter((f) => f.endsWith('.ts') && !f.startsWith('_'))
      .map((f) => f.replace(/\.ts$/, ''))
      .sort()
    assert.ok(files.length > 0)
    assert.deepEqual(Object.keys(manifest.commands).sort(), files)
  })

  it('records the status alias `health`', () => {
    const manifest = JSON.parse(readFileSync(join(repoRoot, 'oclif.manifest.json'), 'utf8')) as {commands: Record<string, {aliases?: string[]}>}
    assert.deepEqual(manifest.commands.status.aliases, ['health'])
  })
})
