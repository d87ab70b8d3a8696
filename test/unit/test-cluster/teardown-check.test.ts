import {strict as assert} from 'node:assert'
import {type ChildProcess, spawn} from 'node:child_process'
import {mkdtempSync, readFileSync, readlinkSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {leftoversAfterTeardown, parseBootNamespaces, readIfThere, startTicksOf} from '../../e2e/cluster/real-cluster.js'
import {inCI} from '../../helpers/ci.js'

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

  describe('by PID namespace', () => {
    // A sleep as PID 1 of its own PID namespace stands in for a node's boot.sh.
    let unshare: ChildProcess | undefined
    let init = {pid: 0, namespace: '', startTicks: 0}

    before(async function () {
      // A new PID namespace needs root, as real nodes do; in CI the test runs as root (and fails otherwise).
      if (process.getuid?.() !== 0 && !inCI()) this.skip()
      unshare = spawn('unshare', ['--pid', '--fork', '--kill-child', 'sleep', '600'], {stdio: 'ignore'})
      for (let i = 0; i < 100 && !init.pid; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        const child = readIfThere(`/proc/${unshare.pid}/task/${unshare.pid}/children`).trim()
        if (child) {
          init = {pid: Number(child), namespace: readlinkSync(`/proc/${child}/ns/pid`), startTicks: startTicksOf(readFileSync(`/proc/${child}/stat`, 'utf8'))}
        }
      }
      assert.ok(init.pid, 'unshare started no child')
    })

    after(() => unshare?.kill('SIGKILL'))

    it('finds a process still in a PID namespace a node booted in, naming the node', () => {
      const [booted] = parseBootNamespaces(`${init.namespace} ${init.startTicks}\n`)
      const left = leftoversAfterTeardown({...gone, nodes: [{...gone.nodes[0], namespaces: [booted]}]})
      assert.deepEqual(left, [`process ${init.pid} (sleep) of node cp-1`])
    })

    it("does not take a namespace whose number the kernel reused (another init) for the node's", () => {
      // Seen in CI: a pod sandbox of a cluster running beside got the number of a namespace one
      // of this cluster's nodes had booted in before a power cycle.
      const reused = {namespace: init.namespace, initStartTicks: init.startTicks + 1}
      assert.deepEqual(leftoversAfterTeardown({...gone, nodes: [{...gone.nodes[0], namespaces: [reused]}]}), [])
    })
  })

  it("reads boot.sh's record, skipping lines of another shape", () => {
    assert.deepEqual(parseBootNamespaces('pid:[4026532301] 81234\npid:[4026532999]\n\npid:[4026533001] 99000\n'), [
      {namespace: 'pid:[4026532301]', initStartTicks: 81234},
      {namespace: 'pid:[4026533001]', initStartTicks: 99000},
    ])
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
