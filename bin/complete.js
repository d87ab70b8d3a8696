#!/usr/bin/env node
// Shell completion for `kubectl selfhost <TAB>` (kubectl >= 1.26 runs
// `kubectl_complete-selfhost <args...> <partial>`) and for the scripts of
// `kubectl-selfhost completion bash|zsh`. Prints candidates one per line, then `:<directive>`.
// Reads oclif.manifest.json and never loads oclif, so a TAB stays fast.
import {readFileSync} from 'node:fs'

try {
  const {complete, formatCompletion, kubeconfigContexts} = await import('../dist/src/completion/complete.js')
  const manifest = JSON.parse(readFileSync(new URL('../oclif.manifest.json', import.meta.url), 'utf8'))
  const completion = await complete(manifest, process.argv.slice(2), {contexts: kubeconfigContexts})
  process.stdout.write(formatCompletion(completion))
} catch {
  // A broken install must not spill errors into the user's prompt: cobra's "error" directive.
  process.stdout.write(':1\n')
}
