import assert from 'node:assert/strict'
import {createRequire} from 'node:module'
import {dirname, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import type {Command} from '@oclif/core/command'
import {Config} from '@oclif/core/config'
import type {Plugin} from '@oclif/core/config'

import {ManifestPlugin} from '../../../src/oclif/manifest-plugin.js'
import {loadSourcePlugin} from '../../helpers/run-command.js'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..')
const oclifVersion = (createRequire(import.meta.url)('@oclif/core/package.json') as {version: string}).version

/** The bundle's stand-in for oclif's root plugin (src/oclif/manifest-plugin.ts), held to oclif's own Plugin. */
describe('the root plugin made from the manifest', () => {
  let source: Plugin
  let classes: Record<string, Command.Class>
  let plugin: ManifestPlugin
  before(async function () {
    this.timeout(60_000)
    source = await loadSourcePlugin()
    classes = Object.fromEntries(await Promise.all(source.commandIDs.map(async (id) => [id, await source.findCommand(id, {must: true})])))
    // As bin/bundle.mjs orders them at build time.
    const order = Object.keys(source.manifest.commands).sort((a, b) => a.localeCompare(b))
    plugin = new ManifestPlugin(repoRoot, source.pjson, source.manifest, order, classes, oclifVersion)
  })

  it("lists the commands as oclif's Plugin does, in its order", () => {
    const withoutLoad = (commands: Command.Loadable[]) => commands.map(({load: _, ...rest}) => rest)
    assert.deepEqual(withoutLoad(plugin.commands), withoutLoad(source.commands))
    assert.deepEqual(plugin.commandIDs, source.commandIDs)
    for (const key of ['name', 'alias', 'version', 'type', 'isRoot', 'valid', 'moduleType', 'root', 'hooks', 'topics'] as const) {
      assert.deepEqual(plugin[key], source[key], key)
    }
  })

  it('gives oclif the bundled class of a command, told its id and plugin', async () => {
    const trace = await plugin.commands.find((c) => c.id === 'trace')!.load()
    assert.equal(trace, classes.trace)
    assert.equal(trace.id, 'trace')
    assert.equal(trace.plugin, plugin)
    assert.equal(await plugin.findCommand('no-such-command'), undefined)
    await assert.rejects(plugin.findCommand('no-such-command', {must: true}), /command no-such-command not found/)
    await assert.rejects(plugin.findCommand('constructor', {must: true}), /command constructor not found/)
  })

  it("is what oclif's Config runs commands from, aliases included", async () => {
    const config = await Config.load({root: repoRoot, pjson: source.pjson, plugins: new Map([[plugin.name, plugin]])})
    const oclifs = await Config.load({root: repoRoot, pjson: source.pjson, plugins: new Map([[source.name, source]])})
    assert.deepEqual([...config.plugins.values()], [plugin])
    assert.deepEqual(config.commandIDs, oclifs.commandIDs)
    assert.deepEqual(config.topics, oclifs.topics)
    assert.equal(await config.findCommand('health')!.load(), classes.status)
  })
})
