import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {createServer} from 'node:http'
import type {AddressInfo} from 'node:net'
import {fileURLToPath} from 'node:url'

import {writeFakeKubeconfig} from '../../helpers/fake-cluster.js'

const child = fileURLToPath(new URL('../../helpers/node-task-child.ts', import.meta.url))

/** A real process, a real HTTP API fake, a real signal: the node pod must be deleted before exit. */
describe('node task runner under a real signal', function () {
  this.timeout(30_000)

  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`deletes the pod when the process gets ${signal}, then exits ${code}`, async () => {
      const requests: string[] = []
      let polled: () => void
      const running = new Promise<void>((resolve) => (polled = resolve))
      const server = createServer((req, res) => {
        requests.push(`${req.method} ${req.url}`)
        req.resume()
        res.setHeader('Content-Type', 'application/json')
        if (req.method === 'POST') res.writeHead(201).end('{}')
        else if (req.method === 'GET') {
          polled()
          res.end(JSON.stringify({status: {phase: 'Running', containerStatuses: [{name: 'task', state: {running: {}}}]}}))
        } else res.end('{}')
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      try {
        const kubeconfig = writeFakeKubeconfig(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
        const proc = spawn(process.execPath, ['--import', 'tsx', child, kubeconfig], {stdio: ['ignore', 'pipe', 'pipe']})
        let stderr = ''
        proc.stderr.on('data', (c) => (stderr += c))
        const exited = new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)))
        await running
        proc.kill(signal)
        const exitCode = await exited
        assert.equal(exitCode, code, stderr)
        const deletes = requests.filter((r) => r.startsWith('DELETE /api/v1/namespaces/kube-system/pods/selfhost-signal-test-worker-1-'))
        assert.equal(deletes.length, 1, requests.join('\n'))
        assert.ok(requests.indexOf(deletes[0]) > requests.findIndex((r) => r.startsWith('POST')), 'deleted after it was created')
      } finally {
        server.close()
      }
    })
  }
})
