/**
 * The package as users install it, run by the real kubectl: kubectl finds `kubectl-selfhost`
 * on PATH, runs it with its arguments and passes its exit code through; kubectl >= 1.26 asks
 * `kubectl_complete-selfhost` for completions.
 */
import assert from 'node:assert/strict'
import {mkdtempSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {delimiter, join} from 'node:path'

import {execa} from 'execa'

import {ensureBuilt, onPath, repoRoot} from '../helpers/build.js'
import {inCI} from '../helpers/ci.js'

/** kubectl from PATH, else the one the e2e build script makes (built once, cached). */
async function findKubectl(): Promise<string | undefined> {
  const fromPath = onPath('kubectl')
  if (fromPath) return fromPath
  try {
    const {stdout} = await execa('bash', [join(repoRoot, 'test', 'e2e', 'cluster', 'build.sh')], {cwd: repoRoot})
    const binDir = stdout.trim().split('\n').at(-1)!
    return onPath('kubectl', binDir)
  } catch {
    return undefined
  }
}

describe('kubectl runs the plugin', function () {
  this.timeout(1_800_000)
  let kubectl: string
  let env: NodeJS.ProcessEnv
  let pluginDir: string

  before(async function () {
    const found = await findKubectl()
    if (!found) {
      // CI must prove this; a laptop without kubectl may skip it, and says so.
      if (inCI()) throw new Error('no kubectl on PATH and test/e2e/cluster/build.sh could not provide one')
      console.warn('    skipped: no kubectl on PATH and none could be built')
      this.skip()
    }

    kubectl = found!
    await ensureBuilt()
    pluginDir = mkdtempSync(join(tmpdir(), 'selfhost-plugin-path-'))
    symlinkSync(join(repoRoot, 'bin', 'run.js'), join(pluginDir, 'kubectl-selfhost'))
    symlinkSync(join(repoRoot, 'bin', 'complete.js'), join(pluginDir, 'kubectl_complete-selfhost'))
    env = {...process.env, PATH: `${pluginDir}${delimiter}${process.env.PATH}`, NO_COLOR: '1'}
  })

  it('`kubectl selfhost --help` runs our binary and lists the commands', async () => {
    const {stdout, exitCode} = await execa(kubectl, ['selfhost', '--help'], {env, reject: false})
    assert.equal(exitCode, 0)
    assert.match(stdout, /USAGE\n\s+\$ kubectl-selfhost \[COMMAND\]/)
    for (const command of ['status', 'health', 'logs', 'completion']) assert.match(stdout, new RegExp(`^\\s+${command}\\s`, 'm'), command)
  })

  it('`kubectl plugin list` finds it on PATH', async () => {
    // plugin list exits non-zero when some other plugin on this machine's PATH draws a warning; the listing is what counts.
    const {stdout} = await execa(kubectl, ['plugin', 'list'], {env, reject: false})
    assert.ok(stdout.split('\n').includes(join(pluginDir, 'kubectl-selfhost')), stdout)
  })

  it('passes arguments through and our exit code back', async () => {
    const {stderr, exitCode} = await execa(kubectl, ['selfhost', 'logs', 'kubelet'], {env, reject: false})
    assert.equal(exitCode, 1)
    assert.match(stderr, /^error: unknown component "kubelet"; known components: kube-apiserver, /m)
  })

  it('completes through kubectl_complete-selfhost (kubectl >= 1.26)', async () => {
    const commands = await execa(kubectl, ['__complete', 'selfhost', 'st'], {env, reject: false})
    assert.deepEqual(
      commands.stdout.split('\n').map((l) => l.split('\t')[0]),
      ['status', ':4'],
    )
    const components = await execa(kubectl, ['__complete', 'selfhost', 'logs', 'kube-c'], {env, reject: false})
    assert.deepEqual(components.stdout.split('\n'), ['kube-controller-manager', ':4'])
  })
})

describe('the completion scripts, in a real bash', function () {
  this.timeout(120_000)
  const bash = onPath('bash') ?? '/bin/bash'
  before(ensureBuilt)

  /** Loads the script kubectl-selfhost prints, completes the words, prints COMPREPLY. */
  async function bashComplete(words: string[], path: string): Promise<string[]> {
    const script = [
      `source <("${process.execPath}" "${join(repoRoot, 'bin', 'run.js')}" completion bash)`,
      `COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')})`,
      `COMP_CWORD=${words.length - 1}`,
      '_kubectl_selfhost',
      'printf "%s\\n" "${COMPREPLY[@]}"',
    ].join('\n')
    // bash by its full path, found on the real PATH: the PATH under test may hold no bash.
    const {stdout} = await execa(bash, ['-c', script], {env: {...process.env, PATH: path}})
    return stdout.split('\n').filter(Boolean)
  }

  it('completes commands, components and flag values through kubectl_complete-selfhost on PATH', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'selfhost-complete-path-'))
    symlinkSync(join(repoRoot, 'bin', 'complete.js'), join(dir, 'kubectl_complete-selfhost'))
    const path = `${dir}${delimiter}${process.env.PATH}`
    assert.deepEqual(await bashComplete(['kubectl-selfhost', 'lo'], path), ['logs'])
    assert.deepEqual(await bashComplete(['kubectl-selfhost', 'logs', 'kube-s'], path), ['kube-scheduler'])
    assert.deepEqual(await bashComplete(['kubectl-selfhost', 'status', '-o', ''], path), ['table', 'wide', 'json', 'yaml'])
  })

  it("falls back to this install's bin/complete.js when the completer is not on PATH", async () => {
    // PATH is one empty directory, so no completer is on it wherever npm put this machine's
    // global binaries (after `npm link` on Debian's Node that is /usr/bin, beside bash itself).
    const empty = mkdtempSync(join(tmpdir(), 'selfhost-empty-path-'))
    assert.deepEqual(await bashComplete(['kubectl-selfhost', 'health', '--outp'], empty), ['--output'])
  })
})

describe('the completion scripts, in a real zsh', function () {
  this.timeout(120_000)
  let zsh: string
  before(async function () {
    await ensureBuilt()
    const found = onPath('zsh')
    if (!found) {
      // CI installs zsh (test/e2e/cluster/install-deps.sh); a laptop without it may skip, and says so.
      if (inCI()) throw new Error('zsh is not installed; install-deps.sh should have installed it')
      console.warn('    skipped: zsh is not installed')
      this.skip()
    }

    zsh = found!
  })

  /**
   * Loads the script kubectl-selfhost prints and runs its completion function on the words.
   * Outside an interactive completion zsh has no _describe/_files, so stand-ins print what the
   * function hands them: the candidates (value:description) or the kind of file completion.
   */
  async function zshComplete(words: string[]): Promise<string[]> {
    const script = [
      `source <("${process.execPath}" "${join(repoRoot, 'bin', 'run.js')}" completion zsh)`,
      '_describe() { print -l -- "${(@P)${@[-1]}}" }',
      '_files() { print "FILES" "$@" }',
      `words=(${words.map((w) => `'${w}'`).join(' ')})`,
      `CURRENT=${words.length}`,
      '_kubectl_selfhost',
    ].join('\n')
    const {stdout} = await execa(zsh, ['-f', '-c', script])
    return stdout.split('\n').filter(Boolean)
  }

  it('hands zsh candidates with descriptions, component names, and file or directory completion where a flag takes a path', async () => {
    const status = await zshComplete(['kubectl-selfhost', 'st'])
    assert.deepEqual(
      status.map((c) => c.split(':')[0]),
      ['status'],
    )
    assert.match(status[0], /^status:Show every control-plane component/)
    assert.deepEqual(await zshComplete(['kubectl-selfhost', 'logs', 'kube-s']), ['kube-scheduler'])
    assert.deepEqual(await zshComplete(['kubectl-selfhost', 'status', '--kubeconfig', '']), ['FILES'])
    assert.deepEqual(await zshComplete(['kubectl-selfhost', 'pivot', '--from-dir', '']), ['FILES -/'])
  })
})
