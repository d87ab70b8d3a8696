/**
 * Completion scripts for the `kubectl-selfhost` binary itself. Both hand the words to the
 * same completer kubectl uses (`kubectl_complete-selfhost`, or this install's
 * bin/complete.js when that is not on PATH) and read its cobra-style answer: candidates, then
 * `:<directive>` (4 = no file completion, 16 = directories only, 2 = no trailing space).
 */

export const COMPLETION_SHELLS = ['bash', 'zsh'] as const
export type CompletionShell = (typeof COMPLETION_SHELLS)[number]

const shellQuote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`

function completerFunction(nodePath: string, completerPath: string): string {
  return `__kubectl_selfhost_completer() {
  if command -v kubectl_complete-selfhost >/dev/null 2>&1; then
    kubectl_complete-selfhost "$@"
  else
    ${shellQuote(nodePath)} ${shellQuote(completerPath)} "$@"
  fi
}`
}

function bashScript(nodePath: string, completerPath: string): string {
  return `# bash completion for kubectl-selfhost. Load it with:
#   source <(kubectl-selfhost completion bash)
${completerFunction(nodePath, completerPath)}

_kubectl_selfhost() {
  local cur=\${COMP_WORDS[COMP_CWORD]}
  local out
  out=$(__kubectl_selfhost_completer "\${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur" 2>/dev/null) || return 0
  local directive=\${out##*$'\\n'}
  directive=\${directive#:}
  [[ $directive =~ ^[0-9]+$ ]] || directive=0
  local candidates=''
  [[ $out == *$'\\n'* ]] && candidates=\${out%$'\\n'*}
  COMPREPLY=()
  local line
  while IFS= read -r line; do
    [[ -n $line ]] && COMPREPLY+=("\${line%%$'\\t'*}")
  done <<< "$candidates"
  if (( directive & 2 )); then compopt -o nospace 2>/dev/null; fi
  if (( \${#COMPREPLY[@]} == 0 )); then
    if (( directive & 16 )); then
      mapfile -t COMPREPLY < <(compgen -d -- "$cur")
    elif (( (directive & 4) == 0 )); then
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    fi
  fi
}
complete -F _kubectl_selfhost kubectl-selfhost
`
}

function zshScript(nodePath: string, completerPath: string): string {
  return `#compdef kubectl-selfhost
# zsh completion for kubectl-selfhost. Load it with:
#   source <(kubectl-selfhost completion zsh)
${completerFunction(nodePath, completerPath)}

_kubectl_selfhost() {
  local out directive line name
  local -a lines candidates
  out=$(__kubectl_selfhost_completer "\${(@)words[2,CURRENT-1]}" "\${words[CURRENT]}" 2>/dev/null) || return 1
  lines=("\${(@f)out}")
  directive=\${lines[-1]#:}
  lines=("\${(@)lines[1,-2]}")
  for line in $lines; do
    name=\${line%%$'\\t'*}
    if [[ $line == *$'\\t'* ]]; then
      candidates+=("\${name//:/\\\\:}:\${line#*$'\\t'}")
    else
      candidates+=("\${name//:/\\\\:}")
    fi
  done
  if (( \${#candidates} )); then
    _describe -t values 'kubectl-selfhost' candidates
  elif (( directive & 16 )); then
    _files -/
  elif (( (directive & 4) == 0 )); then
    _files
  fi
}
if (( $+functions[compdef] )); then
  compdef _kubectl_selfhost kubectl-selfhost
fi
`
}

export function completionScript(shell: CompletionShell, nodePath: string, completerPath: string): string {
  return shell === 'bash' ? bashScript(nodePath, completerPath) : zshScript(nodePath, completerPath)
}
