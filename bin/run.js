#!/usr/bin/env node
// Help, --version and unknown commands are answered from oclif.manifest.json without loading
// oclif, which costs more than starting node itself (see src/help/render.ts). The rest goes to
// oclif, bundled with the commands into one file by bin/bundle.mjs and compiled with V8's code
// cache (see loadBundle).
//
// CommonJS (bin/package.json), unlike the rest of the package: node starts its ES module loader
// for an ES module entry, which cost a command's start some 7 ms of CPU; a command run now meets
// it only where it must (help, src/help/render.js; the oidc and proxy-url client, see loadBundle).
'use strict'
const {existsSync, readFileSync, renameSync, writeFileSync} = require('node:fs')
const {Module, createRequire} = require('node:module')
const {dirname, join} = require('node:path')
const {Script} = require('node:vm')

const argv = process.argv.slice(2)

function readJson(relative) {
  try {
    return JSON.parse(readFileSync(join(__dirname, relative), 'utf8'))
  } catch {
    return undefined
  }
}

// Without a manifest (a fresh checkout before the build) oclif finds the commands itself.
const manifest = readJson('../oclif.manifest.json')
const pjson = readJson('../package.json')
const command = findCommand(argv[0])

async function answeredWithoutOclif() {
  if (!manifest || !pjson) return false
  // A command's name first and no help flag (before `--`): a command run, for oclif. Everything
  // else is for src/help/render.js to tell apart, loaded only then.
  const words = argv.includes('--') ? argv.slice(0, argv.indexOf('--')) : argv
  if (command && !words.includes('--help') && !words.includes('-h')) return false
  const bin = pjson.oclif?.bin ?? pjson.name
  const userAgent = `${bin}/${pjson.version} ${process.platform}-${process.arch} node-${process.version}`
  if (argv.length === 1 && argv[0] === '--version') {
    process.stdout.write(`${userAgent}\n`)
    return true
  }

  let help
  try {
    help = await import('../dist/src/help/render.js')
  } catch {
    process.stderr.write('error: kubectl-selfhost is not built; run `npm run build` in its folder\n')
    process.exitCode = 1
    return true
  }

  const {helpRequest, renderHelp, unknownCommandLine} = help
  const request = helpRequest(manifest, argv)
  if (!request) return false
  if (request.kind === 'unknown') {
    process.stderr.write(`${unknownCommandLine(manifest, request.word)}\n`)
    process.exitCode = 1
    return true
  }

  const width = process.stdout.isTTY ? process.stdout.columns || 80 : 80
  process.stdout.write(`${renderHelp({bin, version: pjson.version, description: pjson.description, userAgent, width}, manifest, request)}\n`)
  return true
}

async function main() {
  if (await answeredWithoutOclif()) return
  const bundle = join(__dirname, '..', 'dist', 'bundle', 'cli.cjs')
  if (existsSync(bundle)) {
    await loadBundle(bundle, cacheName()).run(argv, {manifest, pjson})
  } else {
    process.stderr.write('error: kubectl-selfhost is not built; run `npm run build` in its folder\n')
    process.exitCode = 1
  }
}

/** The manifest's command called `word`, by its id or an alias. */
function findCommand(word) {
  return Object.values(manifest?.commands ?? {}).find((c) => c.id === word || c.aliases?.includes(word))
}

/**
 * The command this run is for (its id, also when called by an alias), naming its code cache: a
 * cache holds only the functions the run that wrote it compiled, so one shared by every command
 * would serve whichever ran first after the build and leave the others compiling their own code
 * on every start (trace --from-file with status's cache: about 8 ms more CPU).
 */
function cacheName() {
  return command ? command.id.replace(/[^A-Za-z0-9-]/g, '_') : 'other'
}

/**
 * Loads the bundle as a CommonJS module, compiled with V8's code cache: compiling its 1 MB
 * costs more than running node itself, and node 20 caches code only when asked like this. A
 * command's first run (and its first after a rebuild or a node upgrade, when V8 rejects the
 * cache) writes its cache next to the bundle on exit, with every function the command compiled;
 * where that folder is read-only, each run compiles afresh.
 */
function loadBundle(file, name) {
  const cacheFile = `${file}.${name}.${process.arch}-${process.versions.v8}.v8cache`
  let cachedData
  try {
    cachedData = readFileSync(cacheFile)
  } catch {
    // no cache yet
  }

  // latin1: bin/bundle.mjs writes the bundle in ASCII, and a latin1 read is a copy where UTF-8 is decoded.
  const wrapped = `(function (exports, require, module, __filename, __dirname, __selfhostImport) {${readFileSync(file, 'latin1')}\n})`
  const script = new Script(wrapped, {filename: file, cachedData})
  const module = new Module(file)
  module.filename = file
  // oclif's explicit command strategy requires the bundle by path: let it find this instance.
  require.cache[file] = module
  // A script compiled so has no import() in node 20: bin/bundle.mjs points the bundle's one
  // import of an ES module (@kubernetes/client-node, for oidc and proxy-url) at this loader.
  const importModule = (specifier) => import(specifier)
  script.runInThisContext()(module.exports, createRequire(file), module, file, dirname(file), importModule)
  module.loaded = true
  if (!cachedData || script.cachedDataRejected) {
    process.once('exit', () => {
      try {
        const partial = `${cacheFile}.${process.pid}`
        writeFileSync(partial, script.createCachedData())
        renameSync(partial, cacheFile)
      } catch {
        // a read-only install: no cache, just a slower start
      }
    })
  }

  return module.exports
}

// The promise, for the single executable's loader (bin/package.mjs) to report a failure as it always has.
module.exports = main()
