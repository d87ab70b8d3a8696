#!/usr/bin/env node
// Build step (`npm run build`, after tsc and `oclif manifest`): bundles oclif, every command
// and their dependencies into dist/bundle/cli.cjs, so a command loads one file instead of some
// 400 modules (node's module loader pays per file), and bin/run.js can compile it with V8's
// code cache (CommonJS, because node 20 has no code cache for ES modules). Measured with
// `npm run bench` (README, "Performance"). @kubernetes/client-node stays outside: it is loaded
// only for the oidc auth-provider and proxy-url. The command list comes from the manifest,
// so a new command needs nothing here.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'

import {build} from 'esbuild'

const root = new URL('..', import.meta.url)
const manifest = JSON.parse(readFileSync(new URL('oclif.manifest.json', root), 'utf8'))
const pjson = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'))
const commands = Object.values(manifest.commands)
// oclif's Plugin would load these from package.json; src/oclif/manifest-plugin.ts, which stands in for it, does not.
const unsupported = ['hooks', 'topics', 'plugins', 'devPlugins', 'jitPlugins'].filter((key) => pjson.oclif[key] !== undefined)
if (unsupported.length > 0) {
  throw new Error(`bundle: src/oclif/manifest-plugin.ts does not load oclif.${unsupported.join(', oclif.')} from package.json: teach it first`)
}

// The order oclif's Plugin.load sorts the commands in (localeCompare), computed here so that a
// command's start does not pay for ICU (see src/oclif/manifest-plugin.ts).
const order = commands.map((c) => c.id).sort((a, b) => a.localeCompare(b))
const entry = [
  "import {readFileSync} from 'node:fs'",
  "import {join} from 'node:path'",
  // oclif's modules one by one: its index also loads what a command does not need (semver, for a node version check).
  "import {ExitError} from '@oclif/core/errors'",
  "import {flush} from '@oclif/core/flush'",
  "import {handle} from '@oclif/core/handle'",
  "import {version as oclifVersion} from '@oclif/core/package.json'",
  "import {run as runOclif} from '@oclif/core/run'",
  "import {ManifestPlugin} from './dist/src/oclif/manifest-plugin.js'",
  // A command's module (and what it imports) is evaluated only when oclif asks for its class:
  // esbuild makes a module required rather than imported a function run on its first require.
  `export const COMMANDS = {${commands.map((c) => `get ${JSON.stringify(c.id)}() { return require('./${c.relativePath.join('/')}').default }`).join(', ')}}`,
  `const ORDER = ${JSON.stringify(order)}`,
  '/** `built`: oclif.manifest.json and package.json as bin/run.js has read them (read here when not given). */',
  'export async function run(args, built = {}) {',
  "  const root = join(__dirname, '..', '..')",
  "  const pjson = built.pjson ?? JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))",
  "  // oclif's explicit strategy: the command classes are the ones in this bundle (bin/run.js",
  '  // registers it in require.cache), not the files in dist/commands.',
  "  pjson.oclif.commands = {strategy: 'explicit', target: './dist/bundle/cli.cjs', identifier: 'COMMANDS'}",
  // oclif itself ignores a manifest of another version (it warns, then asks the classes): so does this.
  '  const plugin = built.manifest?.version === pjson.version && new ManifestPlugin(root, pjson, built.manifest, ORDER, COMMANDS, oclifVersion)',
  // oclif's execute() ends a non-zero exit with process.exit() at once, dropping output a pipe
  // has not taken yet (a large `-o json | wc -c` with exit code 2 lost all but 64 KiB): the same
  // steps, but the exit waits until stdout and stderr are handed to the OS.
  '  try {',
  '    await runOclif(args, {root, pjson, plugins: plugin ? new Map([[plugin.name, plugin]]) : undefined})',
  '    await flush()',
  '  } catch (error) {',
  "    await Promise.all([process.stdout, process.stderr].map((s) => new Promise((resolve) => s.write('', () => resolve()))))",
  '    if (error instanceof ExitError) process.exit(error.oclif.exit)',
  '    await handle(error)',
  '  }',
  '}',
].join('\n')

const outfile = new URL('dist/bundle/cli.cjs', root)
const {outputFiles} = await build({
  stdin: {contents: entry, resolveDir: new URL('.', root).pathname, sourcefile: 'bundle-entry.js'},
  outfile: outfile.pathname,
  write: false,
  bundle: true,
  // Whitespace and syntax only: function names stay, so -v stack traces still say where.
  minifyWhitespace: true,
  minifySyntax: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // typescript: oclif's loader of .ts commands in development, never used from a build.
  external: ['@kubernetes/client-node', 'typescript'],
  logLevel: 'warning',
})

// bin/run.js compiles the bundle as a script with V8's code cache, where node 20 supports no
// import(): the one ES module it imports, client-node, comes through a loader bin/run.js hands in.
const EXTERNAL_IMPORT = 'import("@kubernetes/client-node")'
const code = outputFiles[0].text
const imports = code.split(EXTERNAL_IMPORT).length - 1
if (imports === 0) throw new Error(`bundle: expected ${EXTERNAL_IMPORT} in the bundle (src/kube loads client-node on demand)`)
mkdirSync(new URL('.', outfile), {recursive: true})
writeFileSync(outfile, ascii(code.replaceAll(EXTERNAL_IMPORT, '__selfhostImport("@kubernetes/client-node")')))

/**
 * The bundle with every character outside ASCII written as \u escapes (UTF-16 code units, as
 * JavaScript escapes them), so that bin/run.js can read it as latin1: a plain copy, where UTF-8
 * costs a decoding pass, and one character above U+00FF would make the whole megabyte a
 * two-byte string. esbuild escapes such characters itself except in regular expression literals
 * (and comments and the raw text of tagged templates): in a regular expression \uXXXX means the
 * character itself, and one escaped as itself (a backslash before it) becomes the one escape.
 * The raw text of a tagged template would change (String.raw would see the escape): none in
 * the bundle has such a character.
 */
function ascii(text) {
  const escaped = text.replace(/(\\*)(\P{ASCII})/gu, (_, backslashes, character) => {
    const units = Array.from({length: character.length}, (_, i) => `\\u${character.charCodeAt(i).toString(16).padStart(4, '0')}`).join('')
    return `${backslashes.length % 2 === 1 ? backslashes.slice(1) : backslashes}${units}`
  })
  if (!/^\p{ASCII}*$/u.test(escaped)) throw new Error('bundle: not ASCII after escaping')
  return escaped
}
