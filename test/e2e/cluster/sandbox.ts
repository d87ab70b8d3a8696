/**
 * `npm run sandbox [-- ARGS]`: a real test control plane for a person.
 * Without ARGS it prints `export KUBECONFIG=...` and stays up until Ctrl-C.
 * With ARGS it runs `kubectl selfhost ARGS` (the plugin built from this checkout, found by
 * kubectl on PATH as a real plugin), prints its output, tears down and exits with its code.
 * `npm run sandbox -- kubectl ARGS` runs plain kubectl instead.
 */
import {spawn, spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {delimiter, dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {MissingPrerequisiteError} from './binaries.js'
import {type TestCluster, startTestCluster} from './harness.js'
import {REAL_VERSION, startRealCluster} from './real-cluster.js'

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, '../../..')
const say = (line: string) => process.stderr.write(`sandbox: ${line}\n`)

function numberFlag(args: string[], name: string, fallback: number): number {
  const index = args.indexOf(name)
  if (index < 0) return fallback
  const value = Number(args[index + 1])
  if (!Number.isInteger(value) || value < 0) {
    say(`${name} needs a whole number`)
    process.exit(1)
  }

  args.splice(index, 2)
  return value
}

/** Runs kubectl (or `kubectl selfhost`) against the sandbox with the plugin on PATH. */
async function runAgainst(cluster: Pick<TestCluster, 'binDir' | 'kubeconfig'>, args: string[]): Promise<number> {
  const pluginDir = mkdtempSync(join(tmpdir(), 'kubectl-selfhost-plugin-'))
  try {
    symlinkSync(join(repoRoot, 'bin', 'run.js'), join(pluginDir, 'kubectl-selfhost'))
    const argv = args[0] === 'kubectl' ? args.slice(1) : ['selfhost', ...args]
    say(`$ kubectl ${argv.join(' ')}`)
    const child = spawn(join(cluster.binDir, 'kubectl'), argv, {
      stdio: 'inherit',
      env: {...process.env, KUBECONFIG: cluster.kubeconfig, PATH: [pluginDir, cluster.binDir, process.env.PATH].join(delimiter)},
    })
    return await new Promise<number>((done) => {
      child.once('error', (error) => {
        say(`cannot run kubectl: ${error.message}`)
        done(1)
      })
      child.once('close', (code, signal) => done(code ?? (signal ? 1 : 0)))
    })
  } finally {
    rmSync(pluginDir, {recursive: true, force: true})
  }
}

/**
 * What both sandboxes do once their cluster is up: stop it on Ctrl-C (and SIGTERM, SIGHUP);
 * with ARGS, run them against it and stop with their exit code; without, print the
 * KUBECONFIG line and the lines `describe` gives, and stay up until Ctrl-C.
 */
async function serve(
  cluster: Pick<TestCluster, 'binDir' | 'kubeconfig'> & {stop(): Promise<string[] | void>},
  args: string[],
  describe: string[],
): Promise<void> {
  let stopping: Promise<void> | undefined
  const stop = (code: number) => {
    stopping ??= (async () => {
      say('stopping the cluster')
      const left = (await cluster.stop()) ?? []
      for (const what of left) say(`left behind: ${what}`)
      if (left.length === 0) say('stopped; nothing left running')
      process.exit(left.length === 0 ? code : 1)
    })()
  }

  process.on('SIGINT', () => stop(0))
  process.on('SIGTERM', () => stop(0))
  process.on('SIGHUP', () => stop(0))
  if (args.length > 0) {
    stop(await runAgainst(cluster, args))
    return
  }

  // Real nodes are not children of this process: keep it alive until Ctrl-C, which removes them.
  setInterval(() => undefined, 1 << 30)
  console.log(`export KUBECONFIG=${cluster.kubeconfig}`)
  say(`the matching kubectl: ${join(cluster.binDir, 'kubectl')}`)
  for (const line of describe) say(line)
  say('press Ctrl-C to stop and remove everything')
}

/** `--real`: nodes with a real kubelet, containerd and runc, made by kubeadm (see README, "Real nodes"). */
async function mainReal(args: string[]): Promise<void> {
  const controlPlanes = numberFlag(args, '--control-planes', 1)
  const workers = numberFlag(args, '--workers', 0)
  // `--version v1.36.3`: start older, with the images of REAL_VERSION on the nodes to upgrade to.
  const versionIndex = args.indexOf('--version')
  const version = versionIndex >= 0 ? args.splice(versionIndex, 2)[1] : REAL_VERSION
  say('building or finding the binaries and images (a first build takes several minutes), then kubeadm init')
  let cluster: Awaited<ReturnType<typeof startRealCluster>>
  try {
    cluster = await startRealCluster({
      controlPlanes,
      workers,
      version,
      upgradeTargets: version === REAL_VERSION ? [] : [REAL_VERSION],
      buildProgress: 'inherit',
    })
  } catch (error) {
    say(error instanceof MissingPrerequisiteError ? error.message : (error as Error).message)
    process.exit(1)
  }

  say(`real cluster up in ${(cluster.startupMs / 1000).toFixed(1)}s: ${cluster.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`)
  const lines = cluster.nodes.map((node) => `${node.name}: power loss and boot with ${join(node.dir, 'power-cycle')}; its logs in ${join(node.dir, 'log')}`)
  if (cluster.loadBalancer)
    lines.unshift(`the API address ${cluster.apiUrl} is haproxy in front of the control-plane nodes; its log: ${cluster.loadBalancer.log}`)
  // The same check as the real suites' last tests: what outlived the teardown, if anything did.
  await serve({...cluster, stop: () => cluster.stopAndListLeftovers()}, args, lines)
}

/**
 * Before anything is built: the Debian packages the sandbox runs. As root it installs them
 * (install-deps.sh, which then builds the binaries); otherwise it says in one line what to install.
 */
function ensurePackages(): void {
  const script = join(here, 'install-deps.sh')
  const check = spawnSync('bash', [script, '--check'], {encoding: 'utf8'})
  if (check.status === 0) return
  const missing = check.stdout.trim()
  if (process.getuid?.() !== 0) {
    say(
      `needs these Debian packages first: ${missing}; install them (apt-get install ${missing.replace(/\bgolang-go\b/, '').trim()}${/golang-go/.test(missing) ? ', and Go 1.26' : ''}) or run the sandbox as root, which installs them itself`,
    )
    process.exit(1)
  }

  say(`installing the Debian packages it needs: ${missing} (test/e2e/cluster/install-deps.sh)`)
  if (spawnSync('bash', [script], {stdio: 'inherit'}).status !== 0) {
    say('installing them failed (see above)')
    process.exit(1)
  }
}

async function main(): Promise<void> {
  ensurePackages()
  const args = process.argv.slice(2)
  const realIndex = args.indexOf('--real')
  if (realIndex >= 0) {
    args.splice(realIndex, 1)
    await mainReal(args)
    return
  }

  const controlPlaneNodes = numberFlag(args, '--control-planes', 3)
  const workers = numberFlag(args, '--workers', 1)
  const versionIndex = args.indexOf('--kubeadm-version')
  let kubeadmVersion: string | undefined
  if (versionIndex >= 0) {
    kubeadmVersion = args[versionIndex + 1]
    args.splice(versionIndex, 2)
  }

  say('building or finding the control-plane binaries (a first build takes several minutes)')
  let cluster: TestCluster
  try {
    cluster = await startTestCluster({controlPlaneNodes, workers, kubeadmVersion, buildProgress: 'inherit', handleSignals: false})
  } catch (error) {
    // One line for an expected failure; the stack only when asked for.
    say(error instanceof MissingPrerequisiteError || !process.env.DEBUG ? (error as Error).message : ((error as Error).stack ?? String(error)))
    process.exit(1)
  }

  say(`cluster up in ${(cluster.startupMs / 1000).toFixed(1)}s: ${cluster.nodes.map((n) => `${n.name} (${n.ip})`).join(', ')}`)
  await serve(cluster, args, ['node roots (each node\'s "/"): ' + cluster.nodes.map((n) => `${n.name}=${n.root}`).join(' ')])
}

await main()
