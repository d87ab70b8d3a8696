import {mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {KubeClient} from '../../src/kube/client.js'

/** A kubeconfig pointing at a server nock intercepts (nothing listens there). */
export const FAKE_SERVER = 'https://fake-cluster.test:6443'

export function writeFakeKubeconfig(server = FAKE_SERVER, namespace = 'default'): string {
  const dir = mkdtempSync(join(tmpdir(), 'selfhost-kubeconfig-'))
  const file = join(dir, 'config')
  writeFileSync(
    file,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: fake',
      'clusters:',
      `- name: fake\n  cluster:\n    server: ${server}\n    insecure-skip-tls-verify: true`,
      'users:',
      '- name: fake\n  user:\n    token: fake-token',
      'contexts:',
      `- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: ${namespace}`,
      '',
    ].join('\n'),
  )
  return file
}

export function fakeClient(server = FAKE_SERVER): Promise<KubeClient> {
  return KubeClient.connect({kubeconfig: writeFakeKubeconfig(server), requestTimeoutMs: 5000})
}
