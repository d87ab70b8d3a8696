#!/usr/bin/env node
// Build step (`npm run build`, after tsc and `oclif manifest`): bundles oclif, every command
// and their dependencies into dist/bundle/cli.js, so a command loads one file instead of some
// 400 modules. Node's ES module loader pays per file; measured with `npm run bench` (README,
// "Performance"). @kubernetes/client-node stays outside: it is loaded only for the oidc
// auth-provider and proxy-url. The command list comes from the manifest, so a new command
// needs nothing here.
import {readFileSync} from 'node:fs'

import {build} from 'esbuild'

const root = new URL('..', import.meta.url)
const manifest = JSON.parse(readFileSync(new URL('oclif.manifest.json', root), 'utf8'))
const commands = Object.values(manifest.commands)
const entry = [
  "import {readFileSync} from 'node:fs'",
  "import {fileURLToPath} from 'node:url'",
  "import {execute} from '@oclif/core'",
  ...commands.map((c, i) => `import C${i} from './${c.relativePath.join('/')}'`),
  `export const COMMANDS = {${commands.map((c, i) => `${JSON.stringify(c.id)}: C${i}`).join(', ')}}`,
  'export async function run(args) {',
  "  const root = fileURLToPath(new URL('../..', import.meta.url))",
  "  const pjson = JSON.parse(readFileSync(root + 'package.json', 'utf8'))",
  "  // oclif's explicit strategy: the command classes are the ones in this bundle, not files in dist/commands.",
  "  pjson.oclif.commands = {strategy: 'explicit', target: './dist/bundle/cli.js', identifier: 'COMMANDS'}",
  '  await execute({args, loadOptions: {root, pjson}})',
  '}',
].join('\n')

await build({
  stdin: {contents: entry, resolveDir: new URL('.', root).pathname, sourcefile: 'bundle-entry.js'},
  outfile: new URL('dist/bundle/cli.js', root).pathname,
  bundle: true,
  minify: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // oclif is CommonJS and requires node's modules: give the bundle a require of its own.
  banner: {js: "import {createRequire as __selfhostRequire} from 'node:module'; const require = __selfhostRequire(import.meta.url);"},
  // typescript: oclif's loader of .ts commands in development, never used from a build.
  external: ['@kubernetes/client-node', 'typescript'],
  logLevel: 'warning',
})
