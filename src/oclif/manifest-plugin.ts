/**
 * The CLI as oclif's root plugin, made from what the build produced: oclif.manifest.json and the
 * command classes bundled with it (bin/bundle.mjs). bin/run.js has read and parsed the manifest
 * already; this hands it to oclif through Config.load's `plugins` option, so oclif does not read
 * it again nor look for core, dev or user plugins (this CLI has none, nor a `plugins` command to
 * install any), and commands still run only through oclif: its Config finds the command, parses
 * the flags and runs the hooks. test/unit/oclif/manifest-plugin.test.ts holds it to oclif's Plugin.
 *
 * What it saves is mostly one call. oclif's own Plugin.load sorts the commands with
 * String.prototype.localeCompare, and the first localeCompare of a process starts ICU: 7-10 ms
 * on every command's start, more than anything else oclif does there. The commands here come in
 * the order that sort gave when the bundle was built (`order`), so oclif lists them as before.
 *
 * Only what this package's oclif configuration uses is supported: bin/bundle.mjs refuses to build
 * when package.json gives oclif hooks, topics or plugins, which oclif's Plugin would have loaded.
 */

import type {Command} from '@oclif/core/command'
import {error} from '@oclif/core/errors'
import type * as Interfaces from '@oclif/core/interfaces'

export class ManifestPlugin implements Interfaces.Plugin {
  readonly _base: string
  readonly alias: string
  readonly commandIDs: string[]
  readonly commands: Command.Loadable[]
  readonly commandsDir = undefined
  readonly hasManifest = true
  readonly hooks: Interfaces.Plugin['hooks'] = {}
  readonly isRoot = true
  readonly moduleType: 'commonjs' | 'module'
  readonly name: string
  readonly options: Interfaces.PluginOptions
  readonly topics: Interfaces.Topic[] = []
  readonly type = 'core'
  readonly valid = true
  readonly version: string

  /**
   * @param order the command ids as oclif's Plugin.load sorts them (localeCompare), computed at build time
   * @param classes the command classes by id (the bundle's COMMANDS; each read only when its command runs)
   */
  constructor(
    readonly root: string,
    readonly pjson: Interfaces.PJSON,
    manifest: Interfaces.Manifest,
    order: readonly string[],
    private readonly classes: Readonly<Record<string, Command.Class>>,
    oclifVersion: string,
  ) {
    this._base = `@oclif/core@${oclifVersion}`
    this.options = {isRoot: true, pjson, root}
    this.name = pjson.name
    this.alias = pjson.name
    this.version = pjson.version
    this.moduleType = pjson.type === 'module' ? 'module' : 'commonjs'
    this.commandIDs = Object.keys(manifest.commands)
    const ids = [...order.filter((id) => id in manifest.commands), ...this.commandIDs.filter((id) => !order.includes(id))]
    // The same entries as oclif's Plugin.load makes from a manifest.
    this.commands = ids.map((id) => {
      const cached = manifest.commands[id]
      return {
        ...cached,
        load: async () => this.findCommand(id, {must: true}),
        pluginAlias: this.alias,
        pluginType: cached.pluginType === 'jit' ? 'jit' : this.type,
      }
    })
  }

  async load(): Promise<void> {
    // Everything is known at construction.
  }

  findCommand(id: string, opts: {must: true}): Promise<Command.Class>
  findCommand(id: string, opts?: {must: boolean}): Promise<Command.Class | undefined>
  async findCommand(id: string, opts: {must?: boolean} = {}): Promise<Command.Class | undefined> {
    // As oclif's Plugin does for its explicit strategy: the class exported under that id, told its id and plugin.
    const command = Object.hasOwn(this.classes, id) ? this.classes[id] : undefined
    if (typeof command?.run !== 'function') {
      if (opts.must) error(`command ${id} not found`)
      return undefined
    }

    command.id = id
    command.plugin = this
    return command
  }
}
