import {strict as assert} from 'node:assert'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

import {parse as parseYaml} from 'yaml'

import type {V1DaemonSet, V1Deployment, V1Node, V1Pod} from '../../../src/kube/types.js'
import type {ComponentState, Instance, LeaderRecord} from '../../../src/controlplane/model.js'
import {CliError} from '../../../src/errors.js'
import {ScaleRequest, componentArgv, leaderElectionFromArgs, parseReplicas, planScale, predictRemovals, resolveComponent} from '../../../src/scale/plan.js'
import {placementOf, tolerates} from '../../../src/scale/placement.js'
import {sharedFixturesDir} from '../../helpers/ci.js'

const here = dirname(fileURLToPath(import.meta.url))
const fixture = (name: string) => readFileSync(join(here, '../../fixtures/scale', name), 'utf8')
const schedulerDeployment = (): V1Deployment => parseYaml(fixture('self-hosted-kube-scheduler.yaml')) as V1Deployment

const CP_TAINT = {key: 'node-role.kubernetes.io/control-plane', effect: 'NoSchedule'}

function node(
  name: string,
  opts: {controlPlane?: boolean; ready?: boolean; cordoned?: boolean; taints?: Array<{key: string; effect: string; value?: string}>} = {},
): V1Node {
  const controlPlane = opts.controlPlane ?? true
  return {
    metadata: {name, labels: {'kubernetes.io/hostname': name, ...(controlPlane ? {'node-role.kubernetes.io/control-plane': ''} : {})}},
    spec: {unschedulable: opts.cordoned, taints: opts.taints ?? (controlPlane ? [CP_TAINT] : [])},
    status: {conditions: [{type: 'Ready', status: opts.ready === false ? 'False' : 'True'}]},
  }
}

/** After every pod of the fixtures started: 1 to 3 hours up, one power of two apart or more. */
const NOW = new Date('2026-11-23T13:00:00Z')
const threeMasters = [node('cp-1'), node('cp-2'), node('cp-3'), node('worker-1', {controlPlane: false})]

function pod(name: string, nodeName: string, startedAt: string, ready = true): Instance {
  return {
    pod: name,
    namespace: 'kube-system',
    node: nodeName,
    source: 'workload',
    phase: 'Running',
    ready,
    restarts: 0,
    image: 'registry.k8s.io/kube-scheduler:v1.33.1',
    version: 'v1.33.1',
    startedAt,
    hostname: nodeName,
  }
}

function lease(holderNode: string, pod?: string, stale = false): LeaderRecord {
  return {
    source: 'Lease',
    holderIdentity: `${holderNode}_0b6c0e52-2f2a-4a55-9b0a-5b7d1c8f4e11`,
    holder: holderNode,
    leaseDurationSeconds: 15,
    renewTime: '2026-11-23T18:00:00.000000Z',
    stale,
    pod,
    node: pod ? holderNode : undefined,
  }
}

function selfHosted(
  component: ComponentState['name'],
  instances: Instance[],
  leader?: LeaderRecord,
  kind: 'Deployment' | 'DaemonSet' = 'Deployment',
): ComponentState {
  return {
    name: component,
    mode: 'self-hosted',
    instances,
    workloads: [
      {
        kind,
        namespace: 'kube-system',
        name: `self-hosted-${component}`,
        desired: instances.length,
        ready: instances.length,
        updated: instances.length,
        available: instances.length,
        image: 'registry.k8s.io/x:v1.33.1',
        generation: 1,
        observedGeneration: 1,
        managedByUs: true,
      },
    ],
    versions: ['v1.33.1'],
    leader,
    healthy: true,
    problems: [],
    warnings: [],
  }
}

function withArgs(deployment: V1Deployment, replace: (argv: string[]) => string[], replicas?: number): V1Deployment {
  const copy = structuredClone(deployment)
  const container = copy.spec!.template.spec!.containers[0]
  container.command = replace(container.command ?? [])
  if (replicas !== undefined) copy.spec!.replicas = replicas
  return copy
}

const one = [pod('self-hosted-kube-scheduler-aaa', 'cp-1', '2026-11-23T10:00:00Z')]
const three = [
  pod('self-hosted-kube-scheduler-aaa', 'cp-1', '2026-11-23T10:00:00Z'),
  pod('self-hosted-kube-scheduler-bbb', 'cp-2', '2026-11-23T11:00:00Z'),
  pod('self-hosted-kube-scheduler-ccc', 'cp-3', '2026-11-23T12:00:00Z'),
]

function expectRefusal(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof CliError, `expected a CliError, got ${String(err)}`)
    assert.match(err.message, pattern)
    assert.ok(!err.message.includes('\n'), `refusal must be one line: ${err.message}`)
    return true
  })
}

describe('scale: component names and replica counts', () => {
  const names: Array<[string, string]> = [
    ['kube-scheduler', 'kube-scheduler'],
    ['scheduler', 'kube-scheduler'],
    ['kube-controller-manager', 'kube-controller-manager'],
    ['controller-manager', 'kube-controller-manager'],
    ['kube-apiserver', 'kube-apiserver'],
    ['apiserver', 'kube-apiserver'],
  ]
  for (const [input, expected] of names) {
    it(`resolves "${input}" to ${expected}`, () => assert.equal(resolveComponent(input), expected))
  }

  it('lists the known names for an unknown component', () => {
    expectRefusal(
      () => resolveComponent('kube-shceduler'),
      /unknown component "kube-shceduler"; known: kube-scheduler, scheduler, kube-controller-manager, controller-manager, kube-apiserver, apiserver/,
    )
  })

  it('says where etcd, kube-proxy and CoreDNS are scaled instead', () => {
    expectRefusal(() => resolveComponent('etcd'), /etcdctl member add/)
    expectRefusal(() => resolveComponent('kube-proxy'), /one instance per node/)
    expectRefusal(() => resolveComponent('coredns'), /kubectl -n kube-system scale deployment coredns/)
  })

  const counts: Array<[string, number | RegExp]> = [
    ['0', 0],
    ['1', 1],
    ['3', 3],
    ['+2', 2],
    [' 5 ', 5],
    ['-1', /cannot be negative/],
    ['1.5', /not a whole number/],
    ['3x', /not a whole number/],
    ['', /not a whole number/],
    ['1e3', /not a whole number/],
    ['99999999999', /too large/],
  ]
  for (const [input, expected] of counts) {
    it(`--replicas "${input}" -> ${expected}`, () => {
      if (typeof expected === 'number') assert.equal(parseReplicas(input), expected)
      else expectRefusal(() => parseReplicas(input), expected)
    })
  }
})

describe('scale: leader election from the command line', () => {
  const cases: Array<[string[], boolean, string?]> = [
    [['kube-scheduler', '--kubeconfig=/etc/kubernetes/scheduler.conf'], true],
    [['kube-scheduler', '--leader-elect=true'], true],
    [['kube-scheduler', '--leader-elect'], true],
    [['kube-scheduler', '--leader-elect=false'], false],
    [['kube-scheduler', '--leader-elect=0'], false],
    [['kube-scheduler', '--leader-elect=F'], false],
    [['kube-scheduler', '--leader-elect=false', '--leader-elect=true'], true],
    [['kube-scheduler', '--leader-elect=true', '--leader-elect=false'], false],
    [['kube-scheduler', '--leader-elect=maybe'], true],
  ]
  for (const [argv, enabled] of cases) {
    it(`${argv.slice(1).join(' ') || '(defaults)'} -> ${enabled ? 'on' : 'off'}`, () => {
      assert.equal(leaderElectionFromArgs('kube-scheduler', argv).enabled, enabled)
    })
  }

  it('finds the lease named by --leader-elect-resource-name/-namespace, else the default', () => {
    assert.deepEqual(leaderElectionFromArgs('kube-controller-manager', ['kube-controller-manager']).lease, {
      namespace: 'kube-system',
      name: 'kube-controller-manager',
    })
    assert.deepEqual(
      leaderElectionFromArgs('kube-scheduler', ['kube-scheduler', '--leader-elect-resource-name=my-scheduler', '--leader-elect-resource-namespace', 'ops'])
        .lease,
      {namespace: 'ops', name: 'my-scheduler'},
    )
  })

  it('remembers a --config file, which may override the flags', () => {
    assert.equal(leaderElectionFromArgs('kube-scheduler', ['kube-scheduler', '--config=/etc/kubernetes/sched.yaml']).configFile, '/etc/kubernetes/sched.yaml')
  })

  it('reads command and args of the container named after the component', () => {
    const spec = {
      containers: [
        {name: 'sidecar', command: ['sleep']},
        {name: 'kube-scheduler', command: ['kube-scheduler'], args: ['--leader-elect=false']},
      ],
    }
    assert.deepEqual(componentArgv('kube-scheduler', spec), ['kube-scheduler', '--leader-elect=false'])
  })

  const realWorld = sharedFixturesDir('kubeadm')
  const realSets = realWorld ? readdirSync(realWorld) : []
  for (const set of realSets) {
    for (const component of ['kube-scheduler', 'kube-controller-manager'] as const) {
      const file = join(realWorld!, set, `${component}.yaml`)
      if (!existsSync(file)) continue
      it(`real kubeadm manifest ${set}/${component}.yaml: leader election on, default lease`, () => {
        const manifest = parseYaml(readFileSync(file, 'utf8')) as V1Pod
        const settings = leaderElectionFromArgs(component, componentArgv(component, manifest.spec!))
        assert.equal(settings.enabled, true)
        assert.deepEqual(settings.lease, {namespace: 'kube-system', name: component})
      })
    }
  }
})

describe('scale: placement', () => {
  it('matches tolerations like the scheduler does', () => {
    const taint = {key: 'node-role.kubernetes.io/master', effect: 'NoSchedule'}
    assert.equal(tolerates([{operator: 'Exists'}], taint), true)
    assert.equal(tolerates([{key: 'node-role.kubernetes.io/master', operator: 'Exists'}], taint), true)
    assert.equal(tolerates([{key: 'node-role.kubernetes.io/master', operator: 'Exists', effect: 'NoExecute'}], taint), false)
    assert.equal(tolerates([{key: 'node-role.kubernetes.io/master', operator: 'Equal', value: 'x'}], taint), false)
    assert.equal(tolerates([{key: 'node-role.kubernetes.io/control-plane', operator: 'Exists'}], taint), false)
  })

  it('counts only Ready, uncordoned control-plane nodes whose taints are tolerated', () => {
    const nodes = [
      node('cp-1'),
      node('cp-2', {ready: false}),
      node('cp-3', {cordoned: true}),
      node('cp-4', {taints: [CP_TAINT, {key: 'dedicated', effect: 'NoExecute', value: 'etcd'}]}),
      node('cp-5', {taints: [CP_TAINT, {key: 'soft', effect: 'PreferNoSchedule'}]}),
      node('worker-1', {controlPlane: false}),
    ]
    const spec = schedulerDeployment().spec!.template.spec!
    assert.deepEqual(placementOf(spec, {}, nodes).eligibleNodes, ['cp-1', 'cp-5'])
  })

  it('honours required node affinity and sees one-per-node limits', () => {
    const spec = structuredClone(schedulerDeployment().spec!.template.spec!)
    spec.nodeSelector = undefined
    spec.affinity = {
      nodeAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: {
          nodeSelectorTerms: [{matchExpressions: [{key: 'kubernetes.io/hostname', operator: 'In', values: ['cp-2', 'cp-3']}]}],
        },
      },
      podAntiAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: 'kubernetes.io/hostname', labelSelector: {matchLabels: {component: 'kube-scheduler'}}}],
      },
    }
    const placement = placementOf(spec, {component: 'kube-scheduler'}, threeMasters)
    assert.deepEqual(placement.eligibleNodes, ['cp-2', 'cp-3'])
    assert.match(placement.onePerNodeBecause ?? '', /anti-affinity/)

    spec.affinity = undefined
    spec.containers[0].ports = [{containerPort: 10259}]
    assert.match(placementOf(spec, {}, threeMasters).onePerNodeBecause ?? '', /host port 10259/)
  })
})

describe('scale: the rules', () => {
  const request = (replicas: number, component: ScaleRequest['component'] = 'kube-scheduler', force = false): ScaleRequest => ({component, replicas, force})

  it('scales a self-hosted scheduler 1 -> 3: the leader keeps leading, two standbys join, no throughput gain', () => {
    const plan = planScale(request(3), {
      state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod)),
      workload: schedulerDeployment(),
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(plan.from, 1)
    assert.equal(plan.to, 3)
    assert.equal(plan.change, 'up')
    assert.deepEqual(plan.workload, {
      kind: 'Deployment',
      namespace: 'kube-system',
      name: 'self-hosted-kube-scheduler',
      managedByUs: true,
      resourceVersion: '4711',
    })
    assert.equal(plan.leadership.leaderPod, 'self-hosted-kube-scheduler-aaa')
    assert.equal(plan.leadership.added, 2)
    assert.match(plan.leadership.effect, /self-hosted-kube-scheduler-aaa keeps leading; the 2 new replicas join as standbys/)
    assert.ok(plan.notes.some((n) => /standbys, not throughput/.test(n)))
    assert.deepEqual(plan.placement, {eligibleNodes: ['cp-1', 'cp-2', 'cp-3'], onePerNodeBecause: undefined, readyTarget: 3})
    assert.deepEqual(plan.warnings, [])
  })

  it('scales 3 -> 1: the youngest standbys go, the leader on the oldest pod stays', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => a, 3)
    const plan = planScale(request(1), {
      state: selfHosted('kube-scheduler', three, lease('cp-1', three[0].pod)),
      workload: deployment,
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(plan.change, 'down')
    assert.deepEqual(plan.leadership.standbys, ['self-hosted-kube-scheduler-bbb', 'self-hosted-kube-scheduler-ccc'])
    assert.deepEqual(plan.leadership.expectedRemovals, ['self-hosted-kube-scheduler-ccc', 'self-hosted-kube-scheduler-bbb'])
    assert.equal(plan.leadership.effect, 'self-hosted-kube-scheduler-aaa keeps leading; the standbys go')
  })

  it('scales 1 -> 2: one new standby', () => {
    const plan = planScale(request(2), {
      state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod)),
      workload: schedulerDeployment(),
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(plan.leadership.effect, 'self-hosted-kube-scheduler-aaa keeps leading; the 1 new replica joins as a standby and waits for the lease')
  })

  it('scales 3 -> 2 when the leader is the youngest pod: says leadership moves and for how long', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => a, 3)
    const plan = planScale(request(2), {
      state: selfHosted('kube-scheduler', three, lease('cp-3', three[2].pod)),
      workload: deployment,
      nodes: threeMasters,
      now: NOW,
    })
    assert.deepEqual(plan.leadership.expectedRemovals, ['self-hosted-kube-scheduler-ccc'])
    assert.match(plan.leadership.effect, /leader's pod self-hosted-kube-scheduler-ccc is expected to be removed: a standby takes the lease within about 15s/)
  })

  it('predicts removals by the ReplicaSet ranking: unscheduled, not Ready, crowded, shortest up', () => {
    const pods = [
      pod('a', 'cp-1', '2026-11-23T10:00:00Z'),
      pod('b', 'cp-2', '2026-11-23T09:00:00Z'),
      pod('c', 'cp-2', '2026-11-23T08:00:00Z'),
      pod('d', 'cp-3', '2026-11-23T07:00:00Z', false),
      pod('e', '', '2026-11-23T06:00:00Z', false),
    ]
    assert.deepEqual(predictRemovals(pods, 4, NOW), {certain: ['e', 'd', 'b', 'c']})
    assert.deepEqual(predictRemovals(pods, 0, NOW), {certain: []})
  })

  it('reports a tie where up-times share a power of two, as the controller then goes by UID', () => {
    // Up 140 and 80 minutes: the same bucket (2^42 ns is about 73 minutes, 2^43 about 147).
    const pods = [pod('old', 'cp-1', '2026-11-23T10:40:00Z'), pod('young', 'cp-2', '2026-11-23T11:40:00Z'), pod('newest', 'cp-3', '2026-11-23T12:59:00Z')]
    assert.deepEqual(predictRemovals(pods, 1, NOW), {certain: ['newest']})
    assert.deepEqual(predictRemovals(pods, 2, NOW), {certain: ['newest'], tied: {count: 1, among: ['old', 'young']}})
    const plan = planScale(request(1), {
      state: selfHosted('kube-scheduler', pods, lease('cp-1', 'old')),
      workload: withArgs(schedulerDeployment(), (a) => a, 3),
      nodes: threeMasters,
      now: NOW,
    })
    assert.deepEqual(plan.leadership.possibleRemovals, {count: 1, among: ['old', 'young']})
    assert.match(
      plan.leadership.effect,
      /^the leader's pod old may be removed \(the controller removes 1 of old, young, which its ranking cannot tell apart\); if it is, a standby takes the lease within about 15s/,
    )
  })

  it('refuses N > 1 with --leader-elect=false and names the danger', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => [...a.filter((x) => !x.startsWith('--leader-elect')), '--leader-elect=false'])
    expectRefusal(
      () => planScale(request(2), {state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod)), workload: deployment, nodes: threeMasters, now: NOW}),
      /kube-scheduler runs with --leader-elect=false: 2 replicas would be 2 active schedulers racing to bind the same pods/,
    )
    const kcm = withArgs(deployment, (a) => ['kube-controller-manager', ...a.slice(1)])
    kcm.spec!.template.spec!.containers[0].name = 'kube-controller-manager'
    expectRefusal(
      () => planScale(request(3, 'kube-controller-manager'), {state: selfHosted('kube-controller-manager', one), workload: kcm, nodes: threeMasters, now: NOW}),
      /3 active controller-managers fighting over the same objects/,
    )
  })

  it('allows 1 replica with --leader-elect=false and says why that is fine', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => [...a, '--leader-elect=false'], 2)
    const plan = planScale(request(1), {state: selfHosted('kube-scheduler', three.slice(0, 2)), workload: deployment, nodes: threeMasters, now: NOW})
    assert.equal(plan.leaderElection.enabled, false)
    assert.ok(plan.notes.some((n) => /leader election is off/.test(n)))
  })

  for (const component of ['kube-scheduler', 'kube-controller-manager'] as const) {
    it(`refuses ${component} at 0 without --force, spelling out the consequence`, () => {
      expectRefusal(
        () => planScale(request(0, component), {state: selfHosted(component, one), workload: schedulerDeployment(), nodes: threeMasters, now: NOW}),
        component === 'kube-scheduler'
          ? /refusing to scale kube-scheduler to 0: .*nothing schedules pods.*add --force/
          : /refusing to scale kube-controller-manager to 0: .*no controller runs.*creates no pod.*add --force/,
      )
    })

    it(`scales ${component} to 0 with --force, keeping the consequence as a warning`, () => {
      const plan = planScale(request(0, component, true), {
        state: selfHosted(component, one, lease('cp-1', one[0].pod)),
        workload: schedulerDeployment(),
        nodes: threeMasters,
        now: NOW,
      })
      assert.equal(plan.to, 0)
      assert.equal(plan.warnings.length, 1)
      assert.match(plan.leadership.effect, /no instance remains: nobody renews the lease, it goes stale 15s after/)
    })
  }

  it('warns when replicas exceed the control-plane nodes and one fits per node', () => {
    const deployment = schedulerDeployment()
    deployment.spec!.template.spec!.containers[0].ports = [{containerPort: 10259, name: 'https'}]
    const plan = planScale(request(5), {
      state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod)),
      workload: deployment,
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(plan.placement.readyTarget, 3)
    assert.deepEqual(plan.warnings, [
      '5 replicas but only 3 nodes they can run on (cp-1, cp-2, cp-3): each replica takes host port 10259, so 2 will stay Pending',
    ])
  })

  it('warns about port clashes when hostNetwork pods would share a node without --permit-port-sharing', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => a.filter((x) => !x.startsWith('--permit-port-sharing')))
    const plan = planScale(request(4), {state: selfHosted('kube-scheduler', one), workload: deployment, nodes: threeMasters, now: NOW})
    assert.equal(plan.placement.readyTarget, 4)
    assert.match(plan.warnings[0], /4 replicas but only 3 nodes .*fight for the same port.*--permit-port-sharing/)
  })

  it('reads --permit-port-sharing=false as off', () => {
    const deployment = withArgs(schedulerDeployment(), (a) => [...a, '--permit-port-sharing=false'])
    const plan = planScale(request(4), {state: selfHosted('kube-scheduler', one), workload: deployment, nodes: threeMasters, now: NOW})
    assert.match(plan.warnings[0], /fight for the same port/)
  })

  it("warns that doubled-up replicas share a node's fate when ports are shared", () => {
    const plan = planScale(request(4), {state: selfHosted('kube-scheduler', one), workload: schedulerDeployment(), nodes: threeMasters, now: NOW})
    assert.match(plan.warnings[0], /losing one node takes out more than one replica/)
  })

  it('warns when no node can take a replica', () => {
    const plan = planScale(request(2), {
      state: selfHosted('kube-scheduler', one),
      workload: schedulerDeployment(),
      nodes: [node('worker-1', {controlPlane: false})],
      now: NOW,
    })
    assert.match(plan.warnings[0], /no node can take a kube-scheduler pod now/)
    assert.equal(plan.placement.readyTarget, 2)
  })

  it('explains that kube-apiserver follows the control-plane nodes instead of scaling it', () => {
    const daemonSet: V1DaemonSet = {
      metadata: {name: 'self-hosted-kube-apiserver', namespace: 'kube-system'},
      spec: {
        selector: {matchLabels: {'k8s-app': 'self-hosted-kube-apiserver'}},
        template: {
          metadata: {labels: {'k8s-app': 'self-hosted-kube-apiserver'}},
          spec: {...schedulerDeployment().spec!.template.spec!, containers: [{name: 'kube-apiserver', image: 'x'}]},
        },
      },
    }
    expectRefusal(
      () =>
        planScale(request(5, 'kube-apiserver'), {
          state: selfHosted('kube-apiserver', one, undefined, 'DaemonSet'),
          workload: daemonSet,
          nodes: threeMasters,
          now: NOW,
        }),
      /kube-apiserver is not scaled by a replica count: its instances all serve at once \(active-active\), and DaemonSet kube-system\/self-hosted-kube-apiserver runs one instance on every node labelled node-role.kubernetes.io\/control-plane \(3 now: cp-1, cp-2, cp-3\); to add one, join another control-plane node/,
    )
  })

  it("explains a scheduler run as a DaemonSet (kubeadm's old pivot) the same way", () => {
    expectRefusal(
      () => planScale(request(2), {state: selfHosted('kube-scheduler', one, undefined, 'DaemonSet'), workload: undefined, nodes: threeMasters, now: NOW}),
      /kube-scheduler is not scaled by a replica count: DaemonSet kube-system\/self-hosted-kube-scheduler runs one instance/,
    )
  })

  it('refuses static components with the hint to pivot first', () => {
    const state: ComponentState = {
      ...selfHosted('kube-scheduler', []),
      mode: 'static',
      workloads: [],
      instances: [{...one[0], pod: 'kube-scheduler-cp-1', source: 'static'}],
    }
    expectRefusal(
      () => planScale(request(3), {state, nodes: threeMasters, now: NOW}),
      /kube-scheduler runs as static pods on cp-1 from \/etc\/kubernetes\/manifests, which have no replica count; run `kubectl selfhost pivot` first/,
    )
    const apiserver: ComponentState = {...state, name: 'kube-apiserver'}
    expectRefusal(
      () => planScale(request(3, 'kube-apiserver'), {state: apiserver, nodes: threeMasters, now: NOW}),
      /kube-apiserver runs as static pods .*pivot/,
    )
  })

  it('refuses mid-pivot and absent components', () => {
    expectRefusal(
      () =>
        planScale(request(2), {state: {...selfHosted('kube-scheduler', one), mode: 'mixed'}, workload: schedulerDeployment(), nodes: threeMasters, now: NOW}),
      /a pivot is under way/,
    )
    expectRefusal(
      () => planScale(request(2), {state: {...selfHosted('kube-scheduler', []), mode: 'absent', workloads: []}, nodes: threeMasters, now: NOW}),
      /was not found in the cluster/,
    )
  })

  it('refuses when several Deployments claim the component', () => {
    const state = selfHosted('kube-scheduler', one)
    state.workloads.push({...state.workloads[0], name: 'kube-scheduler'})
    expectRefusal(() => planScale(request(2), {state, workload: schedulerDeployment(), nodes: threeMasters, now: NOW}), /several Deployments/)
  })

  it('says when the lease holder is no pod of the workload, or stale, or missing', () => {
    const base = {workload: schedulerDeployment(), nodes: threeMasters, now: NOW}
    const outside = planScale(request(3), {...base, state: selfHosted('kube-scheduler', one, lease('build-host'))})
    assert.equal(outside.leadership.leaderPod, undefined)
    assert.equal(
      outside.leadership.holderElsewhere,
      'the lease holder build-host matches no pod of this workload (a static pod still running, or another process leads)',
    )
    assert.equal(outside.leadership.effect, `${outside.leadership.holderElsewhere}; the 3 replicas of the workload stand by while it renews`)
    const stale = planScale(request(3), {...base, state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod, true))})
    assert.match(stale.leadership.effect, /is stale/)
    const none = planScale(request(3), {...base, state: selfHosted('kube-scheduler', one)})
    assert.match(none.leadership.effect, /no leader is recorded yet/)
  })

  it('does not take a hostname match for the holder when the lease was taken before the pod started', () => {
    // As in the sandbox, or with a static scheduler left running: a process on cp-1 holds the lease since 09:00.
    const holder = {...lease('cp-1'), acquireTime: '2026-11-23T09:00:00.000000Z'}
    const plan = planScale(request(3), {state: selfHosted('kube-scheduler', one, holder), workload: schedulerDeployment(), nodes: threeMasters, now: NOW})
    assert.equal(plan.leadership.leaderPod, undefined)
    assert.equal(
      plan.leadership.holderElsewhere,
      'the lease holder cp-1 runs on cp-1 but took the lease at 2026-11-23T09:00:00.000000Z, before pod self-hosted-kube-scheduler-aaa started (2026-11-23T10:00:00Z): another process on that node leads',
    )
    assert.deepEqual(plan.leadership.standbys, ['self-hosted-kube-scheduler-aaa'])
    // Taken after the pod started (within the second of its start time): that pod is the holder.
    const own = planScale(request(3), {
      state: selfHosted('kube-scheduler', one, {...holder, acquireTime: '2026-11-23T09:59:59.500000Z'}),
      workload: schedulerDeployment(),
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(own.leadership.leaderPod, 'self-hosted-kube-scheduler-aaa')
  })

  it('re-running at the same count plans no change but still checks', () => {
    const plan = planScale(request(1), {
      state: selfHosted('kube-scheduler', one, lease('cp-1', one[0].pod)),
      workload: schedulerDeployment(),
      nodes: threeMasters,
      now: NOW,
    })
    assert.equal(plan.change, 'none')
    assert.ok(plan.notes.some((n) => /already asks for 1 replica; this run only checks/.test(n)))
  })
})
