import assert from 'node:assert/strict'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {buildControlPlane} from '../../../src/controlplane/discover.js'
import {renderStatus} from '../../../src/render/status.js'
import {NOW, kubeadmCluster} from '../../helpers/cluster-objects.js'

const NEW = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures', 'kubeadm'), 'v1.32.4')

describe('status rendering of problems and warnings', () => {
  const plane = buildControlPlane(
    kubeadmCluster({
      version: 'v1.32.4',
      manifestsDir: NEW,
      controlPlaneNodes: ['cp-1', 'cp-2'],
      selfHosted: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
    }),
    NOW,
  )
  const cost = plane.components.find((c) => c.name === 'kube-apiserver')!.warnings.find((w) => /no checkpointing/.test(w))!
  const warningsOf = (text: string) => text.slice(text.indexOf('Warnings:\n') + 'Warnings:\n'.length, text.indexOf('\n\nControl plane'))

  it('without a width (piped): one line per warning, whole', () => {
    for (const wide of [false, true]) assert.ok(warningsOf(renderStatus(plane, wide)).split('\n').includes(`  kube-apiserver: ${cost}`))
  })

  it('with a terminal width: wraps at spaces under its own text, losing no word', () => {
    const lines = warningsOf(renderStatus(plane, false, 80)).split('\n')
    const start = lines.findIndex((l) => l.startsWith('  kube-apiserver: self-hosted, no checkpointing'))
    assert.ok(start >= 0, lines.join('\n'))
    const prefix = '  kube-apiserver: '
    let end = start + 1
    while (end < lines.length && lines[end].startsWith(' '.repeat(prefix.length))) end++
    const block = lines.slice(start, end)
    assert.ok(block.length > 1, 'a long warning takes several lines')
    for (const line of block) assert.ok(line.length <= 80, `fits 80 columns: ${line}`)
    assert.equal(block.map((l) => l.slice(prefix.length)).join(' '), cost)
  })
})
