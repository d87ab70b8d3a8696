import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {
  HANDOFF_INTERRUPTED_EXIT,
  HANDOFF_RESTORED_EXIT,
  HANDOFF_SCRIPT,
  PREPARE_SCRIPT,
  READ_STATE_SCRIPT,
  activeBackup,
  backupStamp,
  parseNodeState,
} from '../../../src/pivot/node-scripts.js'

const MANIFEST = 'apiVersion: v1\nkind: Pod\n# kept byte for byte, including this comment and no final newline'

function nodeRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'pivot-script-'))
  mkdirSync(join(root, 'etc/kubernetes/manifests'), {recursive: true})
  writeFileSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), MANIFEST)
  return root
}

function sh(script: string, env: Record<string, string>, onStart?: (kill: () => void) => void): Promise<{code: number; out: string}> {
  return new Promise((resolve) => {
    const child = spawn('sh', ['-c', script], {env: {PATH: process.env.PATH, ...env}})
    let out = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (out += c))
    child.on('close', (code) => resolve({code: code ?? -1, out}))
    onStart?.(() => child.kill('SIGTERM'))
  })
}

describe('pivot node scripts (run with sh on a directory standing in for the node)', function () {
  this.timeout(30_000)
  let server: http.Server
  let url: string
  let status = 503
  before(async () => {
    server = http.createServer((_q, res) => {
      res.statusCode = status
      res.end()
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/readyz`
  })
  after(() => new Promise<void>((r) => server.close(() => r())))

  it('backs up byte for byte, never over an existing backup, and the state read finds both', async () => {
    const root = nodeRoot()
    const env = {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: '20260101T000000Z'}
    assert.equal((await sh(PREPARE_SCRIPT, {...env, NEW_B64: Buffer.from('rewritten').toString('base64')})).code, 0)
    assert.equal((await sh(PREPARE_SCRIPT, env)).code, 0)
    const state = parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out)
    assert.equal(state.manifests['kube-apiserver'], 'rewritten')
    assert.equal(activeBackup(state)?.files['kube-apiserver'], MANIFEST)
    assert.equal(activeBackup(state)?.stamp, '20260101T000000Z')
  })

  it('the watchdog puts the manifest back when the local apiserver never answers', async () => {
    const root = nodeRoot()
    const env = {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 's1'}
    await sh(PREPARE_SCRIPT, env)
    status = 503
    const started = Date.now()
    const r = await sh(HANDOFF_SCRIPT, {...env, HEALTH_URL: url, DEADLINE: '2', STOP_SECONDS: '0', SETTLE: '1'})
    assert.equal(r.code, HANDOFF_RESTORED_EXIT, r.out)
    assert.ok(Date.now() - started >= 2000)
    assert.equal(readFileSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), 'utf8'), MANIFEST)
  })

  it('the watchdog lets go once the local apiserver answers SETTLE times after the stop window', async () => {
    const root = nodeRoot()
    const env = {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 's1'}
    await sh(PREPARE_SCRIPT, env)
    status = 200
    const r = await sh(HANDOFF_SCRIPT, {...env, HEALTH_URL: url, DEADLINE: '20', STOP_SECONDS: '1', SETTLE: '2'})
    assert.equal(r.code, 0, r.out)
    assert.ok(!existsSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml')))
    assert.equal(readFileSync(join(root, 'etc/kubernetes/selfhost-backup/s1/kube-apiserver.yaml'), 'utf8'), MANIFEST)
  })

  it('a watchdog stopped early (its pod deleted on Ctrl-C) puts the manifest back at once', async () => {
    const root = nodeRoot()
    const env = {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 's1'}
    await sh(PREPARE_SCRIPT, env)
    status = 503
    const started = Date.now()
    const r = await sh(HANDOFF_SCRIPT, {...env, HEALTH_URL: url, DEADLINE: '60', STOP_SECONDS: '0', SETTLE: '1'}, (kill) => setTimeout(kill, 1500))
    assert.equal(r.code, HANDOFF_INTERRUPTED_EXIT, r.out)
    assert.ok(Date.now() - started < 5000, 'handled within the kubelet grace period')
    assert.equal(readFileSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), 'utf8'), MANIFEST)
  })

  it('refuses to move a manifest that has no backup', async () => {
    const root = nodeRoot()
    const r = await sh(HANDOFF_SCRIPT, {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 'none'})
    assert.equal(r.code, 2)
    assert.equal(readFileSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), 'utf8'), MANIFEST)
  })

  it('refuses a state read cut short, and stamps sort by time', () => {
    assert.throws(() => parseNodeState('cp-1', 'manifest kube-apiserver YQ=='), /incomplete answer/)
    assert.equal(backupStamp(new Date('2026-11-23T18:45:01.123Z')), '20261123T184501Z')
  })
})
