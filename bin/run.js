#!/usr/bin/env node
// Help, --version and unknown commands are answered from oclif.manifest.json without loading
// oclif, which costs more than starting node itself (see src/help/render.ts). The rest goes to
// oclif, bundled with the commands into one file by bin/bundle.js (one file loads several
// times faster than the few hundred modules it replaces).
import {existsSync, readFileSync} from 'node:fs'

const argv = process.argv.slice(2)

function readJson(relative) {
  try {
    return JSON.parse(readFileSync(new URL(relative, import.meta.url), 'utf8'))
  } catch {
    return undefined
  }
}

async function answeredWithoutOclif() {
  // Without a manifest (a fresh checkout before the build) oclif finds the commands itself.
  const manifest = readJson('../oclif.manifest.json')
  const pjson = readJson('../package.json')
  if (!manifest || !pjson) return false
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

if (!(await answeredWithoutOclif())) {
  const bundle = new URL('../dist/bundle/cli.js', import.meta.url)
  if (existsSync(bundle)) {
    const {run} = await import(bundle.href)
    await run(argv)
  } else {
    process.stderr.write('error: kubectl-selfhost is not built; run `npm run build` in its folder\n')
    process.exitCode = 1
  }
}
