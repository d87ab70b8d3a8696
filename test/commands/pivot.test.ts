import assert from 'node:assert/strict'
import {mkdtempSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {parseAllDocuments} from 'yaml'

import {runCommand} from '../helpers/run-command.js'

const fixtures = resolve(dirname(fileURLToPath(import.meta.url)), '../fixtures/kubeadm')

describe('pivot --from-dir (no cluster)', () => {
  it('-o yaml prints only the objects, as multi-document YAML a cluster would take', async () => {
    const {stdout, stderr, exitCode} = await runCommand(['pivot', '--from-dir', join(fixtures, 'v1.29.4'), '--dry-run', '-o', 'yaml'])
    assert.equal(exitCode, 0, stderr)
    const docs = parseAllDocuments(stdout).map((d) => d.toJS())
    assert.deepEqual(
      docs.map((d) => `${d.apiVersion} ${d.kind} ${d.metadata.namespace}/${d.metadata.name}`),
      [
        'apps/v1 DaemonSet kube-system/self-hosted-kube-apiserver',
        'apps/v1 Deployment kube-system/self-hosted-kube-controller-manager',
        'policy/v1 PodDisruptionBudget kube-system/self-hosted-kube-controller-manager',
        'apps/v1 Deployment kube-system/self-hosted-kube-scheduler',
        'policy/v1 PodDisruptionBudget kube-system/self-hosted-kube-scheduler',
      ],
    )
    assert.ok(!stdout.includes('10.0.0.10'), 'no node IP in the objects')
    assert.ok(!/checkpoint/i.test(stdout), 'no prose in -o yaml')
  })

  it('prints costs, steps per node and the objects without -o', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pivot-from-dir-'))
    for (const [node, ip] of [
      ['cp-a', '10.0.0.10'],
      ['cp-b', '10.0.0.20'],
    ]) {
      mkdirSync(join(dir, node))
      for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
        writeFileSync(join(dir, node, `${c}.yaml`), readFileSync(join(fixtures, 'v1.14.10', `${c}.yaml`), 'utf8').replaceAll('10.0.0.10', ip))
      }
    }

    const {stdout, exitCode} = await runCommand(['pivot', '--from-dir', dir, '--dry-run'])
    assert.equal(exitCode, 0)
    assert.match(stdout, /Checkpoints: each control-plane node keeps its self-hosted pods' last Ready spec/)
    assert.match(stdout, /without port sharing \(v1\.14\.10 < 1\.19\) the copy serves 90s/)
    assert.match(stdout, /\[cp-b\] write checkpoints of the self-hosted pods Ready on cp-b/)
    const opted = await runCommand(['pivot', '--from-dir', dir, '--dry-run', '--no-checkpoint'])
    assert.match(opted.stdout, /No checkpointing \(--no-checkpoint\).*Recovery by hand on one node: cp /)
    assert.doesNotMatch(opted.stdout, /write checkpoints/)
    assert.match(stdout, /blind hand-off/)
    assert.match(stdout, /etcd stays static/)
    assert.match(stdout, /node order: cp-a -> cp-b/)
    assert.match(
      stdout,
      /\[cp-b\] take the static manifest out of the kubelet's sight on cp-b \(its original stays in the backup\); the node task puts it back unless the CLI confirms within 360s/,
    )
    assert.match(stdout, /kind: DaemonSet/)
  })

  it('refuses in one line: --from-dir without --dry-run, a missing directory, a differing node', async () => {
    let r = await runCommand(['pivot', '--from-dir', join(fixtures, 'v1.29.4')])
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr.trim(), 'error: --from-dir only plans: add --dry-run (pivot itself reads the manifests from the nodes)')
    r = await runCommand(['pivot', '--from-dir', '/nonexistent/manifests', '--dry-run'])
    assert.equal(r.exitCode, 1)
    assert.equal(r.stderr.trim(), 'error: cannot read --from-dir /nonexistent/manifests: ENOENT')
    const dir = mkdtempSync(join(tmpdir(), 'pivot-differ-'))
    for (const [node, image] of [
      ['cp-a', 'v1.29.4'],
      ['cp-b', 'v1.29.5'],
    ]) {
      mkdirSync(join(dir, node))
      for (const c of ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler']) {
        writeFileSync(join(dir, node, `${c}.yaml`), readFileSync(join(fixtures, 'v1.29.4', `${c}.yaml`), 'utf8').replaceAll('v1.29.4', image))
      }
    }

    r = await runCommand(['pivot', '--from-dir', dir, '--dry-run', '-o', 'yaml'])
    assert.equal(r.exitCode, 1)
    assert.match(
      r.stderr,
      /^error: kube-apiserver differs between control-plane nodes cp-a and cp-b beyond node-specific values, at spec\.containers\[0\]\.image/,
    )
    assert.equal(r.stderr.trim().split('\n').length, 1)
  })
})
