import {strict as assert} from 'node:assert'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync} from 'node:fs'
import {homedir, tmpdir} from 'node:os'
import {delimiter, dirname, join} from 'node:path'

import {execa} from 'execa'
import {parse as parseYaml} from 'yaml'

import {ensureBuilt, repoRoot} from '../helpers/build.js'
import {inCI} from '../helpers/ci.js'
import {MissingPrerequisiteError, ensureBinaries, hasCommand} from './cluster/binaries.js'
import type {TestCluster} from './cluster/harness.js'
import {orSkip, startTestClusterOrSkip} from './support.js'

/**
 * The three ways README installs the plugin, done for real: npm (pack, install -g into a clean
 * prefix), the single executable of `npm run package` (run with no Node on PATH), and krew
 * (built from its Go module, installing manifests/krew/selfhost.yaml with --archive into a
 * scratch KREW_ROOT), each then run through the real kubectl.
 */

const KREW_VERSION = 'v0.4.3'
const krewDir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kubectl-selfhost', `krew-${KREW_VERSION}`)
const arch = {x64: 'amd64', arm64: 'arm64'}[process.arch as string]
const version = `v${JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version}`

/** krew from its Go module, built once into the cache beside the cluster binaries. */
async function ensureKrew(): Promise<string> {
  const krew = join(krewDir, 'krew')
  if (existsSync(krew)) return krew
  if (!(await hasCommand('go'))) throw new MissingPrerequisiteError(['go is not installed (krew is built from sigs.k8s.io/krew)'])
  mkdirSync(krewDir, {recursive: true})
  await execa('go', ['install', `sigs.k8s.io/krew/cmd/krew@${KREW_VERSION}`], {env: {...process.env, GOBIN: krewDir}, cwd: tmpdir()})
  return krew
}

/** A directory holding only these programs, under these names: a PATH with nothing else on it. */
function pathOf(programs: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'selfhost-path-'))
  for (const [name, target] of Object.entries(programs)) symlinkSync(target, join(dir, name))
  return dir
}

describe('installing the plugin (e2e: npm, single executable, krew)', function () {
  this.timeout(900_000)
  let kubectl: string

  before(async function () {
    kubectl = join(await orSkip(this, 'install e2e', ensureBinaries), 'kubectl')

    await ensureBuilt()
  })

  it('npm: the packed tarball installed with npm install -g into a clean prefix runs as `kubectl selfhost`', async () => {
    const work = mkdtempSync(join(tmpdir(), 'selfhost-npm-'))
    const packed = await execa('npm', ['pack', '--silent', '--pack-destination', work], {cwd: repoRoot})
    const tarball = join(work, packed.stdout.trim().split('\n').at(-1)!)
    const prefix = join(work, 'prefix')
    await execa('npm', ['install', '--global', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', tarball], {cwd: work})
    const env = {...process.env, PATH: [join(prefix, 'bin'), dirname(kubectl), dirname(process.execPath), '/usr/bin', '/bin'].join(delimiter), NO_COLOR: '1'}
    const help = await execa(kubectl, ['selfhost', '--help'], {env, reject: false})
    assert.equal(help.exitCode, 0, help.stderr)
    assert.match(help.stdout, /\$ kubectl-selfhost \[COMMAND\]/)
    const complete = await execa(kubectl, ['__complete', 'selfhost', 'st'], {env, reject: false})
    assert.deepEqual(
      complete.stdout.split('\n').map((l) => l.split('\t')[0]),
      ['status', ':4'],
      'kubectl_complete-selfhost installed beside it',
    )
  })

  describe('the single executable and krew', () => {
    let cluster: TestCluster | undefined
    const archive = join(repoRoot, 'release', `kubectl-selfhost_${version}_linux_${arch}.tar.gz`)

    before(async function () {
      // Packaging copies node and unpacks the npm package: about a minute on two cores.
      await execa(process.execPath, [join(repoRoot, 'bin', 'package.mjs')], {cwd: repoRoot})
    })

    after(async () => {
      await cluster?.stop()
    })

    it('npm run package made an archive per platform and a krew manifest with their sha256', async () => {
      const manifest = parseYaml(readFileSync(join(repoRoot, 'manifests', 'krew', 'selfhost.yaml'), 'utf8'))
      assert.equal(manifest.spec.version, version)
      const platforms = manifest.spec.platforms as Array<{selector: {matchLabels: {os: string; arch: string}}; uri: string; sha256: string; bin: string}>
      assert.deepEqual(
        platforms.map((p) => `${p.selector.matchLabels.os}/${p.selector.matchLabels.arch}`),
        ['linux/amd64', 'linux/arm64'],
      )
      for (const p of platforms) {
        const file = join(repoRoot, 'release', p.uri.split('/').at(-1)!)
        const {stdout} = await execa('sha256sum', [file])
        assert.equal(stdout.split(' ')[0], p.sha256, file)
      }
    })

    it('the executable runs with no Node.js anywhere on PATH', async () => {
      const exe = join(repoRoot, 'release', `linux-${arch}`, 'kubectl-selfhost')
      const cache = mkdtempSync(join(tmpdir(), 'selfhost-sea-cache-'))
      const env = {PATH: pathOf({}), HOME: cache, KUBECTL_SELFHOST_CACHE_DIR: cache, NO_COLOR: '1'}
      for (const round of ['first start (unpacks)', 'second start']) {
        const help = await execa(exe, ['--help'], {env, extendEnv: false, reject: false})
        assert.equal(help.exitCode, 0, `${round}: ${help.stderr}`)
        assert.match(help.stdout, /\$ kubectl-selfhost \[COMMAND\]/, round)
      }

      const status = await execa(exe, ['status', '--kubeconfig', '/nonexistent'], {env, extendEnv: false, reject: false})
      assert.deepEqual(
        [status.exitCode, status.stderr.trim()],
        [1, 'error: kubeconfig /nonexistent does not exist; check --kubeconfig'],
        'the oclif path loads too',
      )
    })

    it('the linux/arm64 executable runs too (under qemu user emulation, with no Node.js on PATH)', async function () {
      // Debian's qemu-user-static and the arm64 cross C and C++ runtimes (install-deps.sh installs them).
      const qemu = '/usr/bin/qemu-aarch64-static'
      const sysroot = '/usr/aarch64-linux-gnu'
      if (!existsSync(qemu) || !existsSync(join(sysroot, 'lib', 'libstdc++.so.6'))) {
        if (inCI()) throw new Error('qemu-user-static, libc6-arm64-cross and libstdc++6-arm64-cross are not installed')
        console.warn('    skipped: no qemu-user-static or arm64 cross runtimes (apt-get install qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross)')
        this.skip()
      }

      const cache = mkdtempSync(join(tmpdir(), 'selfhost-sea-arm64-'))
      const env = {PATH: pathOf({}), HOME: cache, KUBECTL_SELFHOST_CACHE_DIR: cache, NO_COLOR: '1'}
      const help = await execa(qemu, ['-L', sysroot, join(repoRoot, 'release', 'linux-arm64', 'kubectl-selfhost'), '--help'], {
        env,
        extendEnv: false,
        reject: false,
      })
      assert.equal(help.exitCode, 0, help.stderr)
      assert.match(help.stdout, /kubectl-selfhost\/\S+ linux-arm64 node-v/)
    })

    it('krew installs it from manifests/krew/selfhost.yaml and --archive; kubectl runs it against a real cluster', async function () {
      const krew = await orSkip(this, 'the krew test', ensureKrew)

      const krewRoot = mkdtempSync(join(tmpdir(), 'selfhost-krew-root-'))
      const tools = pathOf({kubectl, 'kubectl-krew': krew})
      const installEnv = {...process.env, KREW_ROOT: krewRoot, PATH: `${tools}${delimiter}${process.env.PATH}`}
      const install = await execa(kubectl, ['krew', 'install', `--manifest=${join(repoRoot, 'manifests', 'krew', 'selfhost.yaml')}`, `--archive=${archive}`], {
        env: installEnv,
        reject: false,
      })
      assert.equal(install.exitCode, 0, install.stderr)
      assert.match(install.stderr + install.stdout, /Installed plugin: selfhost/)

      // Only kubectl and krew's bin directory: no node, no npm, nothing of this checkout.
      const cache = mkdtempSync(join(tmpdir(), 'selfhost-krew-cache-'))
      const env = {PATH: `${join(krewRoot, 'bin')}${delimiter}${tools}`, HOME: cache, KUBECTL_SELFHOST_CACHE_DIR: cache, NO_COLOR: '1'}
      const help = await execa(kubectl, ['selfhost', '--help'], {env, extendEnv: false, reject: false})
      assert.equal(help.exitCode, 0, help.stderr)
      assert.match(help.stdout, /\$ kubectl-selfhost \[COMMAND\]/)

      cluster = await startTestClusterOrSkip(this, 'install', {controlPlaneNodes: 1, workers: 0})
      const status = await execa(kubectl, ['selfhost', 'status', '--kubeconfig', cluster.kubeconfig], {env, extendEnv: false, reject: false})
      assert.ok([0, 2].includes(status.exitCode ?? -1), `status: exit ${status.exitCode}\n${status.stderr}`)
      assert.match(status.stdout, /^kube-apiserver\s+static\s/m)
    })
  })
})
