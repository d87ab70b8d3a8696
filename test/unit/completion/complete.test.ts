import assert from 'node:assert/strict'

import {Manifest, complete, formatCompletion, kubeconfigContexts} from '../../../src/completion/complete.js'
import {writeFakeKubeconfig} from '../../helpers/fake-cluster.js'
import {loadSourcePlugin} from '../../helpers/run-command.js'

const values = (candidates: string[]) => candidates.map((c) => c.split('\t')[0])

describe('shell completion', () => {
  let manifest: Manifest
  before(async function () {
    this.timeout(60_000)
    // The manifest oclif would write for the current sources: the completer reads exactly this shape.
    manifest = (await loadSourcePlugin()).manifest as unknown as Manifest
  })

  const run = (...words: string[]) => complete(manifest, words, {contexts: kubeconfigContexts})

  it('completes command names and aliases, with descriptions, never files', async () => {
    const all = await run('')
    for (const id of ['status', 'health', 'logs', 'completion', 'scale']) assert.ok(values(all.candidates).includes(id), id)
    assert.equal(all.directive, 4)
    assert.ok(all.candidates.find((c) => c.startsWith('status\t'))!.includes('control-plane component'))
    assert.deepEqual(values((await run('st')).candidates), ['status'])
    assert.deepEqual(values((await run('hea')).candidates), ['health'])
  })

  it('completes component names for logs (all) and scale (the pivoted ones)', async () => {
    assert.deepEqual((await run('logs', '')).candidates, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'etcd', 'kube-proxy', 'coredns'])
    assert.deepEqual((await run('logs', 'kube-s')).candidates, ['kube-scheduler'])
    assert.deepEqual((await run('scale', '')).candidates, ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'])
    assert.deepEqual((await run('logs', 'kube-scheduler', '')).candidates, [], 'one component only')
  })

  it('counts positionals past flags and their values', async () => {
    assert.deepEqual((await run('logs', '--follow', '--tail', '5', '-c', 'x', 'et')).candidates, ['etcd'])
  })

  it('completes flags, leaving out the ones already given', async () => {
    const flags = values((await run('status', '--')).candidates)
    for (const f of ['--output', '--kubeconfig', '--context', '--request-timeout', '--help']) assert.ok(flags.includes(f), f)
    const again = values((await run('status', '-o', 'json', '--')).candidates)
    assert.equal(again.includes('--output'), false)
    assert.deepEqual(values((await run('logs', '--fol')).candidates), ['--follow'])
  })

  it('completes flag values: fixed options, --flag=value, contexts of the kubeconfig given', async () => {
    assert.deepEqual((await run('status', '-o', '')).candidates, ['table', 'wide', 'json', 'yaml'])
    assert.deepEqual((await run('status', '--output=j')).candidates, ['--output=json'])
    const kubeconfig = writeFakeKubeconfig()
    assert.deepEqual((await run('status', '--kubeconfig', kubeconfig, '--context', '')).candidates, ['fake'])
    assert.deepEqual((await run('completion', '')).candidates, ['bash', 'zsh'])
  })

  it('leaves paths to the shell where a flag takes one', async () => {
    assert.deepEqual(await run('status', '--kubeconfig', ''), {candidates: [], directive: 0})
  })

  it("offers nothing for an unknown command, and prints the protocol's last line", async () => {
    const none = await run('frobnicate', '')
    assert.deepEqual(none, {candidates: [], directive: 4})
    assert.equal(formatCompletion({candidates: ['a', 'b'], directive: 4}), 'a\nb\n:4\n')
  })
})
