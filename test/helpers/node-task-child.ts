/**
 * Runs one node task against the API server in argv[2] (a kubeconfig) and prints its result:
 * a separate process, so a test can send it a real SIGINT/SIGTERM.
 */
import {KubeClient} from '../../src/kube/client.js'
import {runNodeTask} from '../../src/node/runner.js'

const client = await KubeClient.connect({kubeconfig: process.argv[2]})
const result = await runNodeTask(
  client,
  {node: 'worker-1', image: 'busybox', command: ['sleep', '3600'], purpose: 'signal-test', deadlineSeconds: 600},
  {pollIntervalMs: 50},
)
process.stdout.write(JSON.stringify(result))
