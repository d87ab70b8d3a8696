import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync} from 'node:fs'
import type {Server} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment} from '../../../src/kube/types.js'
import {type RenderedCheckpoint, renderCheckpoint, renderCheckpointer, versionNumber} from '../../../src/checkpoint/checkpoint.js'
import {CHECKPOINTER_SCRIPT, CHECKPOINT_END, REMOVE_CHECKPOINTS_SCRIPT, WRITE_CHECKPOINTS_SCRIPT} from '../../../src/checkpoint/scripts.js'
import {hexPort} from '../../../src/node/listeners.js'
import {eventually} from '../../helpers/eventually.js'
import {close, freePort, listen} from '../../helpers/sockets.js'
import {planPivot} from '../../../src/pivot/plan.js'
import {distrolessPath, runWithImageTools} from '../../helpers/distroless-tools.js'
import {clusterOf, fixtureSets, liveNodes} from '../pivot/fixture-sets.js'

const CLUSTER = '6b0c4a0e-2f1d-4c1a-9d59-0c3f2d1e8a11'
const toolsOnly = distrolessPath()

interface Run {
  out: () => string
  stop: () => Promise<number>
}

/** Starts the checkpointer loop as its pod would: dash with the kube-proxy image's tools only. */
function startCheckpointer(env: Record<string, string>): Run {
  const child = spawn(join(toolsOnly, 'sh'), ['-c', CHECKPOINTER_SCRIPT], {env: {PATH: toolsOnly, ...env}})
  let out = ''
  child.stdout.on('data', (c) => (out += c))
  child.stderr.on('data', (c) => (out += c))
  const closed = new Promise<number>((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : -1))))
  return {
    out: () => out,
    stop: () => {
      child.kill('SIGKILL')
      return closed
    },
  }
}

const sh = (script: string, env: Record<string, string>) => runWithImageTools(script, env, undefined, toolsOnly)

const until = (what: string, check: () => boolean, timeoutMs = 8000) => eventually(what, timeoutMs, check, 25)

function apiserverTemplate(port: number, version = 'v1.37.2') {
  return {
    metadata: {labels: {'k8s-app': 'self-hosted-kube-apiserver'}},
    spec: {
      hostNetwork: true,
      nodeName: 'cp-1',
      serviceAccountName: 'default',
      containers: [
        {
          name: 'kube-apiserver',
          image: `registry.k8s.io/kube-apiserver:${version}`,
          command: [
            'kube-apiserver',
            '--advertise-address=$(HOST_IP)',
            '--etcd-servers=https://$(HOST_IP):2379',
            `--secure-port=${port}`,
            '--permit-port-sharing=true',
          ],
          env: [{name: 'HOST_IP', valueFrom: {fieldRef: {fieldPath: 'status.hostIP'}}}],
          volumeMounts: [{name: 'k8s-certs', mountPath: '/etc/kubernetes/pki'}],
        },
      ],
      volumes: [{name: 'k8s-certs', hostPath: {path: '/etc/kubernetes/pki', type: 'DirectoryOrCreate'}}],
    },
  }
}

function schedulerTemplate(port: number, sharing: boolean) {
  return {
    spec: {
      containers: [
        {
          name: 'kube-scheduler',
          image: sharing ? 'registry.k8s.io/kube-scheduler:v1.37.2' : 'k8s.gcr.io/kube-scheduler:v1.14.10',
          command: ['kube-scheduler', `--secure-port=${port}`, ...(sharing ? ['--permit-port-sharing=true'] : [])],
          livenessProbe: {httpGet: {path: '/healthz', port}},
        },
      ],
    },
  }
}

const at = new Date('2026-11-29T12:00:00Z')

/** The checkpoint of a kube-apiserver on cp-1 serving on this port (port sharing, v1.37.2). */
const apiserverCheckpoint = (port: number) =>
  renderCheckpoint({component: 'kube-apiserver', template: apiserverTemplate(port), node: 'cp-1', nodeIP: '10.0.0.11', clusterId: CLUSTER, writtenAt: at})

const nodeRoots: string[] = []
after(() => {
  for (const root of nodeRoots.splice(0)) rmSync(root, {recursive: true, force: true})
})

/** A node's /etc/kubernetes with checkpoints written by the real write script. */
async function nodeWith(checkpoints: RenderedCheckpoint[], floor = versionNumber('v1.37.2')): Promise<{root: string; k8s: string; run: string}> {
  const root = mkdtempSync(join(tmpdir(), 'checkpoint-node-'))
  nodeRoots.push(root)
  mkdirSync(join(root, 'etc/kubernetes/manifests'), {recursive: true})
  mkdirSync(join(root, 'etc/kubernetes/selfhost/checkpoint'), {recursive: true})
  mkdirSync(join(root, 'run/kubectl-selfhost'), {recursive: true})
  const env: Record<string, string> = {
    HOST_ROOT: root,
    COMPONENTS: checkpoints.map((c) => c.component).join(' '),
    FLOOR: String(floor),
    CHECKPOINTER: 'checkpointer manifest',
  }
  for (const [i, c] of checkpoints.entries()) env[`CHECKPOINT_${i + 1}`] = c.text
  const written = await sh(WRITE_CHECKPOINTS_SCRIPT, env)
  assert.equal(written.code, 0, written.out)
  return {root, k8s: join(root, 'etc/kubernetes'), run: join(root, 'run/kubectl-selfhost')}
}

function loopEnv(node: {k8s: string; run: string; root: string}, apiPort: number, others: string, sharing = true): Record<string, string> {
  return {
    K8S_DIR: node.k8s,
    RUN_DIR: node.run,
    PROBLEMS: join(node.root, 'problems'),
    CLUSTER,
    APISERVER_PORT: hexPort(apiPort),
    OTHERS: others,
    SHARING: sharing ? '1' : '0',
    GRACE: '40',
    BOOT_GRACE: '4',
    SETTLE: '4',
    APISERVER_SETTLE: '4',
    NO_SHARING_HOLD: '6',
    LINGER: '6',
    TICK: '0.05',
  }
}

describe('checkpoints: rendering', () => {
  it('writes out $(HOST_IP), drops what ties the pod to the API or the scheduler, and keeps its own name and labels', () => {
    const c = apiserverCheckpoint(6443)
    assert.ok(c.text.endsWith(`${CHECKPOINT_END}\n`))
    assert.match(c.text, new RegExp(`^# cluster ${CLUSTER}$`, 'm'))
    assert.match(c.text, /^# version v1\.37\.2 1037002$/m)
    const pod = parseYaml(c.text) as {
      metadata: {name: string; labels: Record<string, string>}
      spec: Record<string, unknown> & {containers: Array<{command: string[]; env?: unknown}>}
    }
    assert.equal(pod.metadata.name, 'kube-apiserver-checkpoint')
    assert.equal(pod.metadata.labels['k8s-app'], undefined, 'the DaemonSet selector must never match the copy')
    assert.deepEqual(pod.spec.containers[0].command.slice(1, 3), ['--advertise-address=10.0.0.11', '--etcd-servers=https://10.0.0.11:2379'])
    assert.equal(pod.spec.containers[0].env, undefined)
    assert.equal(pod.spec.nodeName, undefined)
    assert.equal(pod.spec.serviceAccountName, undefined, 'a mirror pod may not name a service account')
    assert.equal(c.port, 6443)
    assert.equal(c.sharing, true)
  })

  it('refuses what needs the API to start, in one line', () => {
    const t = apiserverTemplate(6443)
    ;(t.spec.volumes as unknown[]).push({name: 'token', secret: {secretName: 'x'}})
    assert.throws(
      () => renderCheckpoint({component: 'kube-apiserver', template: t, node: 'cp-1', nodeIP: '10.0.0.11', clusterId: CLUSTER, writtenAt: at}),
      /token need the API/,
    )
  })

  it('a scheduler copy without port sharing serves nothing (1.14): no port for its self-hosted pod to fight over', () => {
    const c = renderCheckpoint({component: 'kube-scheduler', template: schedulerTemplate(10259, false), node: 'cp-1', clusterId: CLUSTER, writtenAt: at})
    const pod = parseYaml(c.text) as {spec: {containers: Array<{command: string[]; livenessProbe?: unknown}>}}
    assert.equal(c.port, 0)
    assert.deepEqual(
      pod.spec.containers[0].command.filter((a) => /port=/.test(a)),
      ['--secure-port=0', '--port=0'],
    )
    assert.equal(pod.spec.containers[0].livenessProbe, undefined)
  })

  for (const set of fixtureSets) {
    it(`${set.name}: every pivoted pod template checkpoints, and the checkpointer guards it`, () => {
      const {manifests, ips} = clusterOf(set.dir)
      const plan = planPivot({manifests, nodes: liveNodes(ips, 'control-plane')})
      const checkpoints = plan.components.map((component) => {
        const object = component.objects.find((o) => o.kind === component.kind) as V1DaemonSet | V1Deployment
        return renderCheckpoint({
          component: component.component,
          template: object.spec!.template,
          node: 'cp-1',
          nodeIP: ips[0],
          clusterId: CLUSTER,
          writtenAt: at,
        })
      })
      for (const c of checkpoints) {
        assert.doesNotMatch(c.text, /\$\(HOST_IP\)/, `${c.component}: $(HOST_IP) left`)
        assert.equal(c.version, plan.version)
      }

      const manifest = parseYaml(renderCheckpointer({image: 'registry.k8s.io/kube-proxy:v1.37.2', clusterId: CLUSTER, checkpoints, writtenAt: at})) as {
        spec: {hostNetwork: boolean; containers: Array<{env: Array<{name: string; value: string}>}>}
      }
      const env = Object.fromEntries(manifest.spec.containers[0].env.map((e) => [e.name, e.value]))
      assert.equal(manifest.spec.hostNetwork, true)
      assert.equal(env.SHARING, plan.components[0].handoff === 'port-sharing' ? '1' : '0')
      assert.match(env.APISERVER_PORT, /^[0-9A-F]{4}$/)
    })
  }
})

describe('checkpoints: the checkpointer loop (dash and the kube-proxy image tools, real sockets in /proc/net/tcp)', function () {
  this.timeout(60_000)
  const servers: Server[] = []
  afterEach(async () => {
    for (const s of servers.splice(0)) await close(s)
  })

  it('after a boot with no kube-apiserver, starts the copies; steps each aside once its self-hosted instance listens beside it', async () => {
    const [api, sched] = [await freePort(), await freePort()]
    const node = await nodeWith([
      apiserverCheckpoint(api),
      renderCheckpoint({component: 'kube-scheduler', template: schedulerTemplate(sched, true), node: 'cp-1', clusterId: CLUSTER, writtenAt: at}),
    ])
    const copy = (c: string) => join(node.k8s, `manifests/selfhost-checkpoint-${c}.yaml`)
    const run = startCheckpointer(loopEnv(node, api, `kube-scheduler:${hexPort(sched)}`))
    try {
      await until('the apiserver copy', () => existsSync(copy('kube-apiserver')))
      const checkpoint = join(node.k8s, 'selfhost/checkpoint/kube-apiserver.yaml')
      assert.equal(readFileSync(copy('kube-apiserver'), 'utf8'), readFileSync(checkpoint, 'utf8'))
      assert.equal(statSync(copy('kube-apiserver')).ino, statSync(checkpoint).ino, 'the checkpoint under a second name: no new data a crash could cut short')
      await until('the scheduler copy', () => existsSync(copy('kube-scheduler')))
      // Each link's dot-name goes right after it: none is left once both copies are in place.
      await until('no temporary name left', () => readdirSync(join(node.k8s, 'manifests')).every((f) => !f.startsWith('.')))
      assert.ok(existsSync(join(node.run, 'booted')), 'the boot marker')
      // The copy serves alone: it stays.
      servers.push(await listen(api, '127.0.0.1'), await listen(sched, '127.0.0.1'))
      await new Promise((r) => setTimeout(r, 600))
      assert.ok(existsSync(copy('kube-apiserver')), 'one listener (the copy): it stays')
      // The self-hosted instances join on the same ports.
      servers.push(await listen(api, '127.0.0.2'), await listen(sched, '127.0.0.2'))
      await until('the apiserver copy to step aside', () => !existsSync(copy('kube-apiserver')))
      await until('the scheduler copy to step aside', () => !existsSync(copy('kube-scheduler')))
      assert.match(run.out(), /removed the checkpoint of kube-apiserver: the self-hosted kube-apiserver has listened beside it/)
      // Still serving: nothing starts again.
      await new Promise((r) => setTimeout(r, 600))
      assert.ok(!existsSync(copy('kube-apiserver')))
    } finally {
      await run.stop()
    }
  })

  it('a listener that leaves beside the copy (a new apiserver that crashed) starts the count again: the copy stays until the rest listened steadily', async () => {
    const api = await freePort()
    const node = await nodeWith([apiserverCheckpoint(api)])
    const copy = join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')
    // 20 ticks of at least 50 ms: no steady second second.
    const run = startCheckpointer({...loopEnv(node, api, ''), APISERVER_SETTLE: '20'})
    try {
      await until('the apiserver copy', () => existsSync(copy))
      // The copy and the old self-hosted pod listen; a new instance binds and dies, again and again.
      servers.push(await listen(api, '127.0.0.1'), await listen(api, '127.0.0.2'))
      for (let i = 0; i < 6; i++) {
        const crashing = await listen(api, '127.0.0.3')
        await new Promise((r) => setTimeout(r, 250))
        await close(crashing)
        await new Promise((r) => setTimeout(r, 250))
        assert.ok(existsSync(copy), `the copy stays while a listener keeps leaving (round ${i + 1}): ${run.out()}`)
      }

      // Two steady listeners for APISERVER_SETTLE ticks: the copy steps aside.
      await until(
        'the apiserver copy to step aside',
        () => !existsSync(copy) && /removed the checkpoint of kube-apiserver: the self-hosted kube-apiserver has listened beside it for 20s/.test(run.out()),
      )
    } finally {
      await run.stop()
    }
  })

  it('never starts a copy while a kube-apiserver listens, and after a restart (not a boot) waits the long grace', async () => {
    const api = await freePort()
    const node = await nodeWith([apiserverCheckpoint(api)])
    const copy = join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')
    servers.push(await listen(api, '127.0.0.1'))
    let run = startCheckpointer(loopEnv(node, api, ''))
    await new Promise((r) => setTimeout(r, 800))
    await run.stop()
    assert.ok(!existsSync(copy), run.out())
    // A crashed checkpointer restarted by the kubelet: the boot marker is there, so the long grace applies.
    await close(servers.pop()!)
    run = startCheckpointer(loopEnv(node, api, ''))
    try {
      await new Promise((r) => setTimeout(r, 800))
      assert.ok(!existsSync(copy), 'GRACE (40 ticks) not yet over')
      await until('the copy after the long grace', () => existsSync(copy))
      assert.doesNotMatch(run.out(), /first start since the node booted/)
    } finally {
      await run.stop()
    }
  })

  for (const [what, mutate, reason] of [
    ['of another cluster', (t: string) => t.replace(`# cluster ${CLUSTER}`, '# cluster 00000000-0000-0000-0000-000000000000'), /belongs to another cluster/],
    ['cut short', (t: string) => t.slice(0, Math.floor(t.length / 2)), /cut short or unreadable/],
    ["older than the cluster's data", (t: string) => t, /older than the version/],
  ] as Array<[string, (t: string) => string, RegExp]>) {
    it(`a checkpoint ${what} is never started, and the problem is reported`, async () => {
      const api = await freePort()
      const good = apiserverCheckpoint(api)
      const floor = what.startsWith('older') ? versionNumber('v1.38.0') : versionNumber('v1.37.2')
      const node = await nodeWith([good], floor)
      writeFileSync(join(node.k8s, 'selfhost/checkpoint/kube-apiserver.yaml'), mutate(good.text))
      const run = startCheckpointer(loopEnv(node, api, ''))
      try {
        await until('the problem to be reported', () => reason.test(run.out()))
        await new Promise((r) => setTimeout(r, 600))
        assert.ok(!existsSync(join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')))
        assert.match(readFileSync(join(node.root, 'problems'), 'utf8'), reason)
      } finally {
        await run.stop()
      }
    })
  }

  it('without port sharing (1.14), the copy serves its hold time and then steps aside', async () => {
    const api = await freePort()
    const template = apiserverTemplate(api, 'v1.14.10')
    template.spec.containers[0].image = 'k8s.gcr.io/kube-apiserver:v1.14.10'
    template.spec.containers[0].command = template.spec.containers[0].command.filter((a) => !a.includes('port-sharing'))
    const c = renderCheckpoint({component: 'kube-apiserver', template, node: 'cp-1', nodeIP: '10.0.0.11', clusterId: CLUSTER, writtenAt: at})
    assert.equal(c.sharing, false)
    const node = await nodeWith([c], versionNumber('v1.14.10'))
    const copy = join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')
    const run = startCheckpointer(loopEnv(node, api, '', false))
    try {
      await until('the copy', () => existsSync(copy))
      servers.push(await listen(api, '127.0.0.1'))
      // The script removes the file, then says so: wait for both.
      await until('the copy to step aside after its hold', () => !existsSync(copy) && /without port sharing/.test(run.out()))
    } finally {
      await run.stop()
    }
  })

  it('the write task drops checkpoints of components that left the node; the remove task leaves nothing', async () => {
    const api = await freePort()
    const node = await nodeWith([
      apiserverCheckpoint(api),
      renderCheckpoint({component: 'kube-scheduler', template: schedulerTemplate(10259, true), node: 'cp-1', clusterId: CLUSTER, writtenAt: at}),
    ])
    assert.ok(existsSync(join(node.k8s, 'selfhost/checkpoint/kube-scheduler.yaml')))
    const again = await sh(WRITE_CHECKPOINTS_SCRIPT, {
      HOST_ROOT: node.root,
      COMPONENTS: 'kube-apiserver',
      CHECKPOINT_1: readFileSync(join(node.k8s, 'selfhost/checkpoint/kube-apiserver.yaml'), 'utf8'),
      FLOOR: '1037002',
      CHECKPOINTER: 'x',
    })
    assert.equal(again.code, 0, again.out)
    assert.ok(!existsSync(join(node.k8s, 'selfhost/checkpoint/kube-scheduler.yaml')))
    writeFileSync(join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml'), 'a running copy')
    writeFileSync(join(node.k8s, 'manifests/kube-etcd.yaml'), 'not ours')
    const removed = await sh(REMOVE_CHECKPOINTS_SCRIPT, {HOST_ROOT: node.root})
    assert.equal(removed.code, 0, removed.out)
    assert.ok(!existsSync(join(node.k8s, 'selfhost/checkpoint')))
    assert.ok(!existsSync(join(node.k8s, 'manifests/selfhost-checkpointer.yaml')))
    assert.ok(!existsSync(join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')))
    assert.ok(existsSync(join(node.k8s, 'manifests/kube-etcd.yaml')))
    assert.equal((await sh(REMOVE_CHECKPOINTS_SCRIPT, {HOST_ROOT: node.root})).code, 0, 'safe to run twice')
  })

  it('a rewrite never writes into a dot-file a killed write left (another name of the checkpoint a running copy shares)', async () => {
    const api = await freePort()
    const old = apiserverCheckpoint(api)
    const node = await nodeWith([old])
    const checkpoint = join(node.k8s, 'selfhost/checkpoint/kube-apiserver.yaml')
    const copy = join(node.k8s, 'manifests/selfhost-checkpoint-kube-apiserver.yaml')
    linkSync(checkpoint, copy) // a copy the checkpointer started
    linkSync(checkpoint, join(node.k8s, 'selfhost/checkpoint/.kube-apiserver.yaml.selfhost-tmp')) // killed between its two links
    const newer = old.text.replace('v1.37.2', 'v1.37.3')
    const written = await sh(WRITE_CHECKPOINTS_SCRIPT, {
      HOST_ROOT: node.root,
      COMPONENTS: 'kube-apiserver',
      CHECKPOINT_1: newer,
      FLOOR: '1037002',
      CHECKPOINTER: 'x',
    })
    assert.equal(written.code, 0, written.out)
    assert.equal(readFileSync(checkpoint, 'utf8'), newer)
    assert.equal(readFileSync(copy, 'utf8'), old.text, 'the running copy keeps its bytes: the new checkpoint is a new file')
    assert.deepEqual(
      readdirSync(join(node.k8s, 'selfhost/checkpoint')).filter((f) => f.startsWith('.')),
      [],
    )
  })

  it('a write that fails (a full disk) leaves the last good checkpoint whole', async function () {
    if (process.getuid?.() !== 0) this.skip()
    const api = await freePort()
    const good = apiserverCheckpoint(api)
    const node = await nodeWith([good])
    const dir = join(node.k8s, 'selfhost/checkpoint')
    // A tiny filesystem holding the checkpoint directory, then filled up.
    const {execFileSync} = await import('node:child_process')
    const before = readFileSync(join(dir, 'kube-apiserver.yaml'), 'utf8')
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', dir])
    try {
      writeFileSync(join(dir, 'kube-apiserver.yaml'), before)
      writeFileSync(join(dir, 'floor'), '1037002')
      try {
        writeFileSync(join(dir, 'filler'), Buffer.alloc(64 * 1024))
      } catch {
        // ENOSPC: the disk is full now.
      }

      const failed = await sh(WRITE_CHECKPOINTS_SCRIPT, {
        HOST_ROOT: node.root,
        COMPONENTS: 'kube-apiserver',
        CHECKPOINT_1: good.text.replace('v1.37.2', 'v1.37.3').repeat(3),
        FLOOR: '1037003',
        CHECKPOINTER: 'x',
      })
      assert.notEqual(failed.code, 0, failed.out)
      assert.equal(readFileSync(join(dir, 'kube-apiserver.yaml'), 'utf8'), before)
      assert.equal(readFileSync(join(dir, 'floor'), 'utf8'), '1037002')
    } finally {
      execFileSync('umount', [dir])
    }
  })
})
