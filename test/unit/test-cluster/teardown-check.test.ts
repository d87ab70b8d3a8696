import {strict as assert} from 'node:assert'
import {mkdtempSync, readFileSync, readlinkSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {leftoversAfterTeardown} from '../../e2e/cluster/real-cluster.js'

/**
 * The real suites' teardown check (RealCluster.stopAndListLeftovers) on this machine's own
 * processes, cgroups and directories: what it must find, it finds, so its empty answer in the
 * real suites means something.
 */
describe('real cluster teardown check', () => {
  const gone = {
    workDir: '/nonexistent/selfhost-cluster',
    hostInterface: 'shrnone0',
    nodes: [{dir: '/nonexistent/nodes/cp-1', cgroupRoot: '/selfhost-none-cp-1', namespaces: []}],
  }

  it('finds nothing when nothing of the cluster is left', () => {
    assert.deepEqual(leftoversAfterTeardown(gone), [])
  })

  it('finds a process still in a PID namespace a node booted in, naming the node', () => {
    const mine = readlinkSync('/proc/self/ns/pid')
    const left = leftoversAfterTeardown({...gone, nodes: [{...gone.nodes[0], namespaces: [mine]}]})
    assert.ok(left.includes(`process ${process.pid} (${readFileSync('/proc/self/comm', 'utf8').trim()}) of node cp-1`), left.slice(0, 5).join('\n'))
  })

  it('finds a process by its cgroup, and the cgroup directory itself', function () {
    // This process's own cgroup (v1 or v2) stands in for a node's cgroup root.
    const line = readFileSync('/proc/self/cgroup', 'utf8')
      .split('\n')
      .find((l) => /:\/.+$/.test(l))
    if (!line) this.skip() // this process sits in the root cgroup everywhere: nothing to stand in
    const cgroupRoot = line!.slice(line.indexOf(':', line.indexOf(':') + 1) + 1)
    const left = leftoversAfterTeardown({...gone, nodes: [{...gone.nodes[0], cgroupRoot}]})
    assert.ok(
      left.some((l) => l.startsWith(`process ${process.pid} `)),
      left.slice(0, 5).join('\n'),
    )
    assert.ok(
      left.some((l) => l.startsWith('cgroup /sys/fs/cgroup/')),
      left.filter((l) => !l.startsWith('process')).join('\n'),
    )
  })

  it('finds the cluster directory and the host link', () => {
    const workDir = mkdtempSync(join(tmpdir(), 'teardown-check-'))
    try {
      assert.deepEqual(leftoversAfterTeardown({...gone, workDir, hostInterface: 'lo'}), ['link lo', `directory ${workDir}`])
    } finally {
      rmSync(workDir, {recursive: true, force: true})
    }
  })
})
