import {strict as assert} from 'node:assert'

import {SKEW_RULES, UPGRADE_ORDER, UpgradeComponent, checkSkew, parseComponents, refusalLine} from '../../../src/upgrade/skew.js'
import {parseReportedVersion, parseTargetVersion} from '../../../src/upgrade/versions.js'

interface Case {
  name: string
  /** Every control-plane component at these versions unless overridden below. */
  at: string
  target: string
  api?: string[]
  kcm?: string[]
  sched?: string[]
  proxy?: string[]
  kubelets?: string[]
  upgrading?: UpgradeComponent[]
  force?: boolean
  allowDowngrade?: boolean
  /** Rules that must stop the upgrade. */
  blocks: string[]
  /** Rules that fail without blocking (overridden or warnings). */
  notes?: string[]
}

const v = (s: string) => parseReportedVersion(s)!

function run(c: Case) {
  const versions = (list: string[] | undefined) => (list ?? [c.at]).map(v)
  return checkSkew(
    {
      target: parseTargetVersion(c.target),
      current: {
        'kube-apiserver': versions(c.api),
        'kube-controller-manager': versions(c.kcm),
        'kube-scheduler': versions(c.sched),
        'kube-proxy': versions(c.proxy),
      },
      kubelets: (c.kubelets ?? [c.at]).map((version, i) => ({node: `node-${i}`, version: v(version)})),
      upgrading: c.upgrading ?? UPGRADE_ORDER,
    },
    {force: c.force ?? false, allowDowngrade: c.allowDowngrade ?? false},
  )
}

const cases: Case[] = [
  // The user's own example: a 1.14 cluster to v1.15.0 must go through.
  {name: '1.14.10 -> v1.15.0 (the user example)', at: 'v1.14.10', target: 'v1.15.0', blocks: [], notes: ['kube-proxy-matches-kubelets']},
  {name: '1.14.0 -> 1.15.0 without the v', at: 'v1.14.0', target: '1.15.0', blocks: [], notes: ['kube-proxy-matches-kubelets']},
  {name: '1.14.3 -> v1.14.10 (patch)', at: 'v1.14.3', target: 'v1.14.10', blocks: []},
  {
    name: '1.14.10 -> v1.16.0 skips 1.15',
    at: 'v1.14.10',
    target: 'v1.16.0',
    blocks: ['no-skipped-minor', 'apiservers-within-one-minor'],
    notes: ['kube-proxy-matches-kubelets'],
  },
  {name: '1.15.12 -> v1.16.0-rc.1 (pre-release of the next minor)', at: 'v1.15.12', target: 'v1.16.0-rc.1', blocks: [], notes: ['kube-proxy-matches-kubelets']},
  {name: 'v1.16.0-rc.1 -> v1.16.0 (release after its rc)', at: 'v1.16.0-rc.1', target: 'v1.16.0', blocks: []},
  {name: 'v1.16.0 -> v1.16.0-rc.1 is a downgrade', at: 'v1.16.0', target: 'v1.16.0-rc.1', blocks: ['no-downgrade']},
  {name: 'v1.16.0 -> v1.16.0-rc.1 with --allow-downgrade', at: 'v1.16.0', target: 'v1.16.0-rc.1', allowDowngrade: true, blocks: [], notes: ['no-downgrade']},
  {name: '1.18.20 -> 1.19.0 (x.0 edge)', at: 'v1.18.20', target: 'v1.19.0', blocks: [], notes: ['kube-proxy-matches-kubelets']},
  {name: '1.24.17 -> 1.25.0 (proxy rule changes at 1.25)', at: 'v1.24.17', target: 'v1.25.0', blocks: []},
  {name: '1.36.5 -> v1.37.0', at: 'v1.36.5', target: 'v1.37.0', blocks: []},
  {name: '1.36.5 -> v1.37.2', at: 'v1.36.5', target: 'v1.37.2', blocks: []},
  {name: '1.37.2 -> v1.38.0 (newer than the tool knows)', at: 'v1.37.2', target: 'v1.38.0', blocks: [], notes: ['known-version']},
  {name: 'same version is no violation (a re-run)', at: 'v1.20.4', target: 'v1.20.4', blocks: []},
  {name: 'vendor build at the same version', at: 'v1.28.3+k3s1', target: 'v1.28.3', blocks: []},
  {name: 'patch downgrade refused', at: 'v1.20.4', target: 'v1.20.1', blocks: ['no-downgrade']},
  {name: 'patch downgrade allowed with --allow-downgrade', at: 'v1.20.4', target: 'v1.20.1', allowDowngrade: true, blocks: [], notes: ['no-downgrade']},
  {
    name: 'minor downgrade needs --allow-downgrade and --force',
    at: 'v1.21.0',
    kubelets: ['v1.20.15'],
    target: 'v1.20.15',
    allowDowngrade: true,
    blocks: ['minor-downgrade'],
    notes: ['no-downgrade'],
  },
  {
    name: 'minor downgrade with both flags',
    at: 'v1.21.0',
    kubelets: ['v1.20.15'],
    target: 'v1.20.15',
    allowDowngrade: true,
    force: true,
    blocks: [],
    notes: ['no-downgrade', 'minor-downgrade'],
  },
  {
    name: 'two-minor downgrade is never allowed',
    at: 'v1.22.0',
    target: 'v1.20.15',
    allowDowngrade: true,
    force: true,
    blocks: ['downgrade-one-minor-at-most', 'apiservers-within-one-minor', 'kubelets-not-newer-than-apiserver'],
    notes: ['no-downgrade', 'kube-proxy-matches-kubelets'],
  },
  {
    name: 'minor downgrade below the kubelets',
    at: 'v1.21.0',
    target: 'v1.20.15',
    allowDowngrade: true,
    force: true,
    kubelets: ['v1.21.0'],
    blocks: ['kubelets-not-newer-than-apiserver'],
    notes: ['no-downgrade', 'minor-downgrade', 'kube-proxy-matches-kubelets'],
  },
  {
    name: 'kubelets newer than the downgrade target',
    at: 'v1.21.3',
    target: 'v1.20.15',
    allowDowngrade: true,
    force: true,
    kubelets: ['v1.21.3'],
    upgrading: ['kube-apiserver'],
    blocks: ['controllers-not-newer-than-apiserver', 'kubelets-not-newer-than-apiserver', 'kube-proxy-not-newer-than-apiserver'],
    notes: ['no-downgrade', 'minor-downgrade'],
  },
  {
    name: 'HA apiservers mid-upgrade, re-run to the same target',
    at: 'v1.15.12',
    target: 'v1.16.2',
    api: ['v1.15.12', 'v1.16.2', 'v1.16.2'],
    blocks: [],
    notes: ['kube-proxy-matches-kubelets'],
  },
  {
    name: 'HA apiservers already two minors apart',
    at: 'v1.16.2',
    target: 'v1.16.3',
    api: ['v1.14.10', 'v1.16.2'],
    kcm: ['v1.16.2'],
    blocks: ['no-skipped-minor', 'apiservers-within-one-minor'],
  },
  {
    name: 'kcm alone to a minor the apiserver lacks',
    at: 'v1.20.4',
    target: 'v1.21.0',
    upgrading: ['kube-controller-manager'],
    blocks: ['controllers-not-newer-than-apiserver'],
  },
  {name: 'scheduler alone after the apiserver', at: 'v1.20.4', api: ['v1.21.0'], target: 'v1.21.0', upgrading: ['kube-scheduler'], blocks: []},
  {
    name: 'apiserver alone leaves kcm two minors behind',
    at: 'v1.21.0',
    kcm: ['v1.20.4'],
    sched: ['v1.20.4'],
    target: 'v1.22.0',
    upgrading: ['kube-apiserver'],
    blocks: ['controllers-at-most-one-minor-older'],
  },
  {
    name: 'same, with --force',
    at: 'v1.21.0',
    kcm: ['v1.20.4'],
    sched: ['v1.20.4'],
    target: 'v1.22.0',
    upgrading: ['kube-apiserver'],
    force: true,
    blocks: [],
    notes: ['controllers-at-most-one-minor-older'],
  },
  {name: 'kubelets three minors behind on 1.25+', at: 'v1.29.0', kubelets: ['v1.27.1', 'v1.26.0'], target: 'v1.29.1', blocks: []},
  {
    name: 'kubelets four minors behind on 1.25+',
    at: 'v1.29.0',
    kubelets: ['v1.25.9', 'v1.29.0'],
    target: 'v1.30.0',
    blocks: ['kubelets-within-supported-lag'],
    notes: ['kube-proxy-matches-kubelets'],
  },
  {
    name: 'kubelets 1.24 may only lag two (policy reads the kubelet version)',
    at: 'v1.26.0',
    kubelets: ['v1.24.17'],
    target: 'v1.27.0',
    blocks: ['kubelets-within-supported-lag'],
  },
  {
    name: 'kubelets 1.24 lagging with --force',
    at: 'v1.26.0',
    kubelets: ['v1.24.17'],
    target: 'v1.27.0',
    force: true,
    blocks: [],
    notes: ['kubelets-within-supported-lag'],
  },
  {name: 'old kubelets 2 behind before 1.25 pass', at: 'v1.16.0', kubelets: ['v1.15.3'], target: 'v1.17.0', blocks: [], notes: ['kube-proxy-matches-kubelets']},
  {
    name: 'old kubelets 3 behind before 1.25 fail',
    at: 'v1.16.0',
    kubelets: ['v1.14.3', 'v1.16.0'],
    target: 'v1.17.0',
    blocks: ['kubelets-within-supported-lag'],
    notes: ['kube-proxy-matches-kubelets'],
  },
  {
    name: 'kube-proxy left behind by --components',
    at: 'v1.26.0',
    proxy: ['v1.22.3'],
    kubelets: ['v1.26.0'],
    target: 'v1.27.0',
    upgrading: ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler'],
    blocks: ['kube-proxy-within-supported-lag'],
    notes: ['kube-proxy-matches-kubelets'],
  },
  {
    name: 'kube-proxy alone ahead of the apiserver',
    at: 'v1.26.0',
    target: 'v1.27.0',
    upgrading: ['kube-proxy'],
    blocks: ['kube-proxy-not-newer-than-apiserver'],
  },
  {name: 'no kube-proxy (replaced by a CNI)', at: 'v1.30.1', proxy: [], target: 'v1.31.0', blocks: []},
]

describe('upgrade skew rules', () => {
  for (const c of cases) {
    it(c.name, () => {
      const results = run(c)
      assert.deepEqual(
        results
          .filter((r) => r.blocking)
          .map((r) => r.id)
          .sort(),
        [...c.blocks].sort(),
        JSON.stringify(results.filter((r) => !r.passed)),
      )
      assert.deepEqual(
        results
          .filter((r) => !r.passed && !r.blocking)
          .map((r) => r.id)
          .sort(),
        [...(c.notes ?? [])].sort(),
      )
      for (const r of results.filter((r) => !r.passed)) assert.ok(!r.message.includes('\n') && r.message.length > 20, r.message)
    })
  }

  it('covers every rule at least once as a violation', () => {
    const seen = new Set(cases.flatMap((c) => [...c.blocks, ...(c.notes ?? [])]))
    assert.deepEqual(
      SKEW_RULES.map((r) => r.id).filter((id) => !seen.has(id)),
      [],
    )
  })

  it('every overridable rule names its flag and risk; mandatory ones have none', () => {
    for (const rule of SKEW_RULES) {
      if (rule.severity === 'overridable') assert.ok(rule.overrideFlag && rule.risk, rule.id)
      else assert.equal(rule.overrideFlag, undefined, rule.id)
    }
  })

  it('a refusal is one line that says why and the way out', () => {
    const blocking = run({name: '', at: 'v1.20.4', target: 'v1.20.1', blocks: []}).find((r) => r.blocking)!
    const line = refusalLine(blocking)
    assert.match(
      line,
      /^refused by no-downgrade: kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy at v1.20.4: v1.20.1 is a downgrade \(--allow-downgrade overrides this; risk: .+\)$/,
    )
  })

  it('names at most three nodes in one line', () => {
    const results = run({name: '', at: 'v1.29.0', kubelets: ['v1.25.0', 'v1.25.0', 'v1.25.0', 'v1.25.0', 'v1.25.0'], target: 'v1.30.0', blocks: []})
    assert.match(results.find((r) => r.id === 'kubelets-within-supported-lag')!.message, /node-0, node-1, node-2 and 2 more/)
  })
})

describe('upgrade --components', () => {
  it('takes full and short names, in any order, once each', () => {
    assert.deepEqual(parseComponents('scheduler, kube-apiserver,proxy,scheduler'), ['kube-scheduler', 'kube-apiserver', 'kube-proxy'])
    assert.deepEqual(parseComponents('controller-manager'), ['kube-controller-manager'])
    assert.deepEqual(parseComponents('kcm'), ['kube-controller-manager'])
  })

  it('refuses unknown or empty lists in one line', () => {
    assert.throws(
      () => parseComponents('etcd'),
      /^CliError: --components: "etcd" is not one of kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy/,
    )
    assert.throws(() => parseComponents(' , '), /--components is empty/)
  })
})
