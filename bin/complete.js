#!/usr/bin/env node
// Shell completion for `kubectl selfhost <TAB>` (kubectl >= 1.26 runs
// `kubectl_complete-selfhost <args...> <partial>`) and for the scripts of
// `kubectl-selfhost completion bash|zsh`. Prints candidates one per line, then `:<directive>`.
// Reads oclif.manifest.json and never loads oclif, so a TAB stays fast. CommonJS, as all of
// bin/ is (see bin/run.js).
'use strict'
const {readFileSync} = require('node:fs')
const {join} = require('node:path')

async function main() {
  try {
    const {complete, formatCompletion, kubeconfigContexts} = await import('../dist/src/completion/complete.js')
    const manifest = JSON.parse(readFileSync(join(__dirname, '..', 'oclif.manifest.json'), 'utf8'))
    const completion = await complete(manifest, process.argv.slice(2), {contexts: kubeconfigContexts})
    process.stdout.write(formatCompletion(completion))
  } catch {
    // A broken install must not spill errors into the user's prompt: cobra's "error" directive.
    process.stdout.write(':1\n')
  }
}

// The promise, for the single executable's loader (bin/package.mjs), as bin/run.js.
module.exports = main()
