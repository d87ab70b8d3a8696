import assert from 'node:assert/strict'
import {readFileSync, readdirSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {parse as parseYaml} from 'yaml'

import type {V1Pod} from '../../../src/kube/types.js'
import {boolFlag, containerArgv, flagValue, splitImage, versionFromImage} from '../../../src/controlplane/container.js'
import {sharedKubeadmFixtures} from '../../helpers/cluster-objects.js'

const ownFixtures = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures', 'kubeadm')

/** Every container image of every kubeadm manifest in the fixtures, ours and the shared ones. */
function fixtureImages(): string[] {
  const dirs = [
    ...readdirSync(ownFixtures)
      .filter((d) => /^v\d/.test(d))
      .map((d) => join(ownFixtures, d)),
    ...sharedKubeadmFixtures().map((f) => f.dir),
  ]
  const images = dirs.flatMap((dir) =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.yaml'))
      .flatMap((f) => ((parseYaml(readFileSync(join(dir, f), 'utf8')) as V1Pod).spec?.containers ?? []).map((c) => c.image!)),
  )
  return [...new Set(images)].sort()
}

describe('container images and flags', () => {
  describe('versionFromImage and splitImage', () => {
    // [image, registry and path, name, tag, digest, version]
    const cases: Array<[string, string, string, string | undefined, string | undefined, string | undefined]> = [
      ['registry.k8s.io/kube-apiserver:v1.32.4', 'registry.k8s.io', 'kube-apiserver', 'v1.32.4', undefined, 'v1.32.4'],
      ['k8s.gcr.io/kube-apiserver:v1.14.10', 'k8s.gcr.io', 'kube-apiserver', 'v1.14.10', undefined, 'v1.14.10'],
      ['k8s.gcr.io/etcd:3.3.10', 'k8s.gcr.io', 'etcd', '3.3.10', undefined, '3.3.10'],
      ['registry.k8s.io/etcd:3.5.16-0', 'registry.k8s.io', 'etcd', '3.5.16-0', undefined, '3.5.16-0'],
      [
        'registry.aliyuncs.com/google_containers/kube-apiserver:v1.16.2',
        'registry.aliyuncs.com/google_containers',
        'kube-apiserver',
        'v1.16.2',
        undefined,
        'v1.16.2',
      ],
      ['registry.k8s.io/coredns/coredns:v1.11.3', 'registry.k8s.io/coredns', 'coredns', 'v1.11.3', undefined, 'v1.11.3'],
      ['localhost:5000/kube-apiserver:v1.30.0', 'localhost:5000', 'kube-apiserver', 'v1.30.0', undefined, 'v1.30.0'],
      ['localhost:5000/kube-apiserver', 'localhost:5000', 'kube-apiserver', undefined, undefined, undefined],
      ['localhost:5000/kube-apiserver:v1.25.2-eks-1', 'localhost:5000', 'kube-apiserver', 'v1.25.2-eks-1', undefined, 'v1.25.2-eks-1'],
      ['mirror.example:443/k8s/kube-scheduler:v1.28.3+k3s1', 'mirror.example:443/k8s', 'kube-scheduler', 'v1.28.3+k3s1', undefined, 'v1.28.3+k3s1'],
      ['registry.k8s.io/kube-proxy:v1.29.1@sha256:abcdef', 'registry.k8s.io', 'kube-proxy', 'v1.29.1', 'sha256:abcdef', 'v1.29.1'],
      ['registry.k8s.io/kube-proxy@sha256:abcdef', 'registry.k8s.io', 'kube-proxy', undefined, 'sha256:abcdef', undefined],
      ['localhost:5000/kube-proxy@sha256:abcdef', 'localhost:5000', 'kube-proxy', undefined, 'sha256:abcdef', undefined],
      ['kube-apiserver:v1.29.4', '', 'kube-apiserver', 'v1.29.4', undefined, 'v1.29.4'],
      ['myrepo/kube-apiserver:latest', 'myrepo', 'kube-apiserver', 'latest', undefined, undefined],
      ['registry.k8s.io/pause:3.9', 'registry.k8s.io', 'pause', '3.9', undefined, undefined],
      ['quay.io/coreos/hyperkube:v1.10.0_coreos.0', 'quay.io/coreos', 'hyperkube', 'v1.10.0_coreos.0', undefined, undefined],
    ]
    for (const [image, prefix, name, tag, digest, version] of cases) {
      it(`${image}: ${version ?? 'no version'}`, () => {
        assert.deepEqual(splitImage(image), {prefix, name, tag, digest})
        assert.equal(versionFromImage(image), version)
      })
    }

    it('reads the tag of every image in the kubeadm fixtures as its version', () => {
      const images = fixtureImages()
      assert.ok(images.length >= 20, `only ${images.length} images`)
      for (const image of images) assert.equal(versionFromImage(image), image.slice(image.lastIndexOf(':') + 1), image)
    })

    it('has no version without an image', () => {
      assert.equal(versionFromImage(undefined), undefined)
      assert.equal(versionFromImage(''), undefined)
    })
  })

  describe('flags', () => {
    it("reads a container's command, then its args", () => {
      assert.deepEqual(containerArgv({command: ['kube-scheduler', '--v=2'], args: ['--leader-elect=false']}), [
        'kube-scheduler',
        '--v=2',
        '--leader-elect=false',
      ])
      assert.deepEqual(containerArgv({args: ['--port=0']}), ['--port=0'])
    })

    it('takes the last occurrence of a flag, in either form, as pflag does', () => {
      const argv = ['kube-apiserver', '--secure-port=6443', '--advertise-address', '10.0.0.1', '--secure-port', '7443', '--advertise-address=10.0.0.2']
      assert.equal(flagValue(argv, 'secure-port'), '7443')
      assert.equal(flagValue(argv, 'advertise-address'), '10.0.0.2')
      assert.equal(flagValue(argv, 'insecure-port'), undefined)
      // A name that only starts the same is another flag.
      assert.equal(flagValue(['--port=0'], 'por'), undefined)
      // A flag followed by another flag has no value here.
      assert.equal(flagValue(['--bind-address', '--port=0'], 'bind-address'), undefined)
      assert.equal(flagValue(['--config='], 'config'), '')
    })

    it('reads booleans as pflag does: bare means true, Go spellings, the last one wins', () => {
      assert.equal(boolFlag(['--permit-port-sharing'], 'permit-port-sharing', false), true)
      assert.equal(boolFlag(['--permit-port-sharing=True'], 'permit-port-sharing', false), true)
      assert.equal(boolFlag(['--leader-elect=true', '--leader-elect=0'], 'leader-elect', true), false)
      assert.equal(boolFlag(['--leader-elect=maybe'], 'leader-elect', true), true)
      assert.equal(boolFlag([], 'leader-elect', true), true)
    })
  })
})
