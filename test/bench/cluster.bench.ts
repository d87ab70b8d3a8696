import {execFileSync, spawnSync} from 'node:child_process'
import {existsSync, mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'

import {startTestCluster} from '../e2e/cluster/harness.js'
import {repoRoot} from '../helpers/build.js'
import {Benchmark, Case, LEGEND, baseline, compare, loadAverage, rounds, singleExecutable, timeProcesses} from './lib.js'

const ROUNDS = rounds(21)
const run = join(repoRoot, 'bin', 'run.js')
const node = process.execPath
/** Issue 16's targets: at most 3x the kubectl command doing the nearest job, and 2x its peak memory. */
const TARGETS = {ms: 3, memory: 2}

/**
 * Commands that talk to a cluster, each against the kubectl command nearest to its job, on the
 * same sandbox in the same run: the npm install (node bin/run.js) and the single executable
 * (`npm run package`), both held to the same targets. SELFHOST_BENCH_KUBECONFIG (with
 * SELFHOST_BENCH_KUBECTL, default the kubectl next to the sandbox's binaries) points it at a
 * running sandbox; otherwise it starts one for the run and stops it afterwards.
 */
const cluster: Benchmark = {
  name: `cluster commands against kubectl on the sandbox (median of ${ROUNDS} interleaved rounds; wall time, peak memory, CPU time)`,
  async run() {
    const exe = await singleExecutable()
    let kubeconfig = process.env.SELFHOST_BENCH_KUBECONFIG
    let kubectl = process.env.SELFHOST_BENCH_KUBECTL
    let stop = async () => {}
    if (!kubeconfig) {
      const sandbox = await startTestCluster({controlPlaneNodes: 3, workers: 1, buildProgress: 'quiet'})
      kubeconfig = sandbox.kubeconfig
      kubectl ??= join(sandbox.binDir, 'kubectl')
      stop = () => sandbox.stop()
    }

    kubectl ??= join(dirname(kubeconfig), 'kubectl')
    if (!existsSync(kubectl)) kubectl = 'kubectl'
    // The executable unpacks itself on its first start: into a directory of this run's, done before timing.
    const cache = mkdtempSync(join(tmpdir(), 'selfhost-bench-sea-'))
    try {
      const env = {KUBECONFIG: kubeconfig}
      const exeEnv = {...env, KUBECTL_SELFHOST_CACHE_DIR: cache}
      if (exe) spawnSync(exe, ['--version'], {env: {...process.env, ...exeEnv}, stdio: 'ignore'})
      const apiserverPod = execFileSync(
        kubectl,
        ['get', 'pods', '-n', 'kube-system', '-l', 'component=kube-apiserver', '-o', 'jsonpath={.items[0].metadata.name}'],
        {env: {...process.env, ...env}, encoding: 'utf8'},
      )
      const groups: Array<{kubectl: Case; ours: Case[]}> = [
        {
          kubectl: {label: 'kubectl get pods -n kube-system -o wide', argv: [kubectl, 'get', 'pods', '-n', 'kube-system', '-o', 'wide'], env, expectExit: [0]},
          ours: [
            {label: 'kubectl-selfhost status', argv: [node, run, 'status'], env, expectExit: [0, 2]},
            ...(exe ? [{label: 'kubectl-selfhost status (single executable)', argv: [exe, 'status'], env: exeEnv, expectExit: [0, 2]}] : []),
          ],
        },
        {
          kubectl: {
            label: `kubectl logs -n kube-system ${apiserverPod} --tail 1`,
            argv: [kubectl, 'logs', '-n', 'kube-system', apiserverPod, '--tail', '1'],
            env,
            expectExit: [0],
          },
          ours: [
            {label: 'kubectl-selfhost logs kube-apiserver --tail 1', argv: [node, run, 'logs', 'kube-apiserver', '--tail', '1'], env, expectExit: [0]},
            ...(exe
              ? [{label: 'kubectl-selfhost logs ... (single executable)', argv: [exe, 'logs', 'kube-apiserver', '--tail', '1'], env: exeEnv, expectExit: [0]}]
              : []),
          ],
        },
      ]
      const cases = groups.flatMap((g) => [g.kubectl, ...g.ours])
      const loadBefore = loadAverage()
      const samples = timeProcesses(cases, ROUNDS)
      const width = Math.max(...cases.map((c) => c.label.length))
      let metTargets = exe !== undefined
      const lines: string[] = []
      for (const group of groups) {
        const base = samples.get(group.kubectl.label)!
        lines.push(baseline(group.kubectl.label, width, base))
        for (const ours of group.ours) {
          const {line, met} = compare(ours.label, width, samples.get(ours.label)!, base, TARGETS)
          metTargets &&= met
          lines.push(line)
        }
      }

      if (!exe) lines.push('single executable: npm run package failed (see above), not measured')
      lines.push(`load average (1 min) ${loadBefore} before, ${loadAverage()} after`, LEGEND)
      return {lines, metTargets}
    } finally {
      rmSync(cache, {recursive: true, force: true})
      await stop()
    }
  },
}

export default cluster
