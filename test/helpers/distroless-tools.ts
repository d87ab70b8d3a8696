import {spawn} from 'node:child_process'
import {existsSync, mkdtempSync, rmSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

/**
 * What registry.k8s.io's kube-proxy image (distroless-iptables) offers a shell script: dash as
 * sh, and cat, chmod, grep, ln, rm, sleep, wc. Node scripts run in tests with a PATH holding
 * only these, so a script that needs mkdir, mv, base64, date or curl fails here as it would on
 * a real node.
 */
export const DISTROLESS_TOOLS = ['cat', 'chmod', 'grep', 'ln', 'rm', 'sleep', 'wc'] as const

const made = new Map<string, string>()
// One directory per tool set and process, removed when the process exits (fakes call this per task).
process.on('exit', () => {
  for (const dir of made.values()) rmSync(dir, {recursive: true, force: true})
})

/** A directory of symlinks to this machine's copies of those tools (and dash as sh); pass it as PATH. */
export function distrolessPath(without: string[] = []): string {
  const key = [...without].sort().join(' ')
  const known = made.get(key)
  if (known) return known
  const dir = mkdtempSync(join(tmpdir(), 'distroless-path-'))
  made.set(key, dir)
  const find = (tool: string) => ['/bin', '/usr/bin', '/usr/sbin', '/sbin'].map((d) => join(d, tool)).find((p) => existsSync(p))
  symlinkSync(find('dash') ?? '/bin/sh', join(dir, 'sh'))
  for (const tool of DISTROLESS_TOOLS) {
    if (without.includes(tool)) continue
    const path = find(tool)
    if (!path) throw new Error(`this machine has no ${tool}`)
    symlinkSync(path, join(dir, tool))
  }

  return dir
}

/**
 * Runs a script as a node task would in the kube-proxy image: dash and its few tools only.
 * onStart gets a function that sends the script SIGTERM (a pod's deletion).
 */
export function runWithImageTools(
  script: string,
  env: Record<string, string>,
  onStart?: (kill: () => void) => void,
  tools = distrolessPath(),
): Promise<{code: number; out: string}> {
  return new Promise((resolve) => {
    const child = spawn(join(tools, 'sh'), ['-c', script], {env: {PATH: tools, ...env}})
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (out += c))
    child.on('close', (code) => resolve({code: code ?? -1, out}))
    onStart?.(() => child.kill('SIGTERM'))
  })
}
