import semver, {SemVer} from 'semver'

import {CliError} from '../errors.js'
import {NEWEST_KNOWN_MINOR, formatVersion, maxKubeletLag, minorOf} from './versions.js'

/** The components `upgrade` changes, in the order it changes them. */
export const UPGRADE_ORDER = ['kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy'] as const
export type UpgradeComponent = (typeof UPGRADE_ORDER)[number]

/**
 * mandatory: the version-skew policy forbids it; nothing overrides it.
 * overridable: refused unless the user passes `overrideFlag` and accepts `risk`.
 * warning: reported in the plan, never blocks.
 */
export type Severity = 'mandatory' | 'overridable' | 'warning'
export type OverrideFlag = '--force' | '--allow-downgrade'

export interface SkewInputs {
  target: SemVer
  /** Current version of every instance of each component (empty when it has none). */
  current: Record<UpgradeComponent, SemVer[]>
  kubelets: Array<{node: string; version: SemVer}>
  /** The components this run changes (all of UPGRADE_ORDER unless --components). */
  upgrading: readonly UpgradeComponent[]
}

export interface SkewRule {
  id: string
  severity: Severity
  overrideFlag?: OverrideFlag
  /** What the user risks by overriding it. */
  risk?: string
  /** One line per violation; empty when the rule holds. */
  violations(inputs: SkewInputs): string[]
}

export interface CheckResult {
  id: string
  severity: Severity
  passed: boolean
  /** Why it failed, one line; or what was checked when it passed. */
  message: string
  overrideFlag?: OverrideFlag
  risk?: string
  /** Failed, but the user passed its override flag. */
  overridden: boolean
  /** Failed and stops the upgrade. */
  blocking: boolean
}

const CONTROLLERS = ['kube-controller-manager', 'kube-scheduler'] as const

const byVersion = (versions: SemVer[]): SemVer[] => [...versions].sort(semver.compare)
const oldest = (versions: SemVer[]): SemVer | undefined => byVersion(versions)[0]
const newest = (versions: SemVer[]): SemVer | undefined => byVersion(versions).at(-1)

/**
 * The versions a component runs while and after this run changes it: during a rolling
 * upgrade the old and the new run side by side, so both count.
 */
function during(inputs: SkewInputs, component: UpgradeComponent): SemVer[] {
  const current = inputs.current[component]
  return inputs.upgrading.includes(component) ? [...current, inputs.target] : current
}

/**
 * The versions a component runs once this run is done. The order (apiserver first on the
 * way up, last on the way down) keeps the controllers behind the apiserver meanwhile.
 */
function after(inputs: SkewInputs, component: UpgradeComponent): SemVer[] {
  return inputs.upgrading.includes(component) ? [inputs.target] : inputs.current[component]
}

/**
 * One line per distinct current version among the components this run changes, naming
 * every component at that version, for those where `violates` holds.
 */
function perCurrentVersion(
  inputs: SkewInputs,
  pick: (versions: SemVer[]) => SemVer,
  violates: (from: SemVer) => boolean,
  describe: (components: string, from: SemVer) => string,
): string[] {
  const groups = new Map<string, {from: SemVer; components: string[]}>()
  for (const component of inputs.upgrading) {
    if (inputs.current[component].length === 0) continue
    const from = pick(inputs.current[component])
    if (!violates(from)) continue
    const group = groups.get(from.version) ?? {from, components: []}
    group.components.push(component)
    groups.set(from.version, group)
  }

  return [...groups.values()].map(({from, components}) => describe(components.join(', '), from))
}

/** A node list that stays one line even on a big cluster. */
function nodeList(nodes: string[]): string {
  return nodes.length <= 3 ? nodes.join(', ') : `${nodes.slice(0, 3).join(', ')} and ${nodes.length - 3} more`
}

/**
 * The version-skew policy as data. Each rule names what it forbids, whether anything can
 * override it, and what overriding risks.
 */
export const SKEW_RULES: readonly SkewRule[] = [
  {
    id: 'known-version',
    severity: 'warning',
    violations: ({target}) =>
      target.minor > NEWEST_KNOWN_MINOR
        ? [
            `${formatVersion(target)} is newer than the newest release this tool knows (1.${NEWEST_KNOWN_MINOR}); its flags and features are assumed as of 1.${NEWEST_KNOWN_MINOR}`,
          ]
        : [],
  },
  {
    id: 'no-skipped-minor',
    severity: 'mandatory',
    violations: (inputs) =>
      perCurrentVersion(
        inputs,
        (versions) => oldest(versions)!,
        (from) => inputs.target.minor - from.minor > 1,
        (components, from) =>
          `${components} at ${formatVersion(from)}: ${formatVersion(inputs.target)} would skip ${inputs.target.minor - from.minor - 1} minor release(s); upgrade to the newest 1.${from.minor + 1}.x first`,
      ),
  },
  {
    id: 'no-downgrade',
    severity: 'overridable',
    overrideFlag: '--allow-downgrade',
    risk: 'a downgrade is not what a typo in --version should do; the older release must still read everything the newer one wrote',
    violations: (inputs) =>
      perCurrentVersion(
        inputs,
        (versions) => newest(versions)!,
        (from) => semver.compare(inputs.target, from) < 0,
        (components, from) => `${components} at ${formatVersion(from)}: ${formatVersion(inputs.target)} is a downgrade`,
      ),
  },
  {
    id: 'downgrade-one-minor-at-most',
    severity: 'mandatory',
    violations: (inputs) =>
      perCurrentVersion(
        inputs,
        (versions) => newest(versions)!,
        (from) => from.minor - inputs.target.minor > 1,
        (components, from) => `${components} at ${formatVersion(from)}: going down to ${formatVersion(inputs.target)} crosses more than one minor release`,
      ),
  },
  {
    id: 'minor-downgrade',
    severity: 'overridable',
    overrideFlag: '--force',
    risk: 'objects the newer apiserver stored in etcd may use API versions or fields the older one cannot read, and etcd is not rolled back',
    violations: (inputs) =>
      perCurrentVersion(
        inputs,
        (versions) => newest(versions)!,
        (from) => from.minor - inputs.target.minor === 1,
        (components, from) => `${components} would go down a minor release, from ${minorOf(from)} to ${minorOf(inputs.target)}`,
      ),
  },
  {
    id: 'apiservers-within-one-minor',
    severity: 'mandatory',
    violations: (inputs) => {
      const versions = during(inputs, 'kube-apiserver')
      const [low, high] = [oldest(versions), newest(versions)]
      return low && high && high.minor - low.minor > 1
        ? [`kube-apiserver instances would span ${minorOf(low)} to ${minorOf(high)}; HA apiservers must stay within one minor of each other`]
        : []
    },
  },
  {
    id: 'controllers-not-newer-than-apiserver',
    severity: 'mandatory',
    violations: (inputs) => {
      const apiserverLow = oldest(after(inputs, 'kube-apiserver'))
      if (!apiserverLow) return []
      return CONTROLLERS.flatMap((component) => {
        const high = newest(after(inputs, component))
        return high && high.minor > apiserverLow.minor
          ? [`${component} would run ${formatVersion(high)}, newer than kube-apiserver ${formatVersion(apiserverLow)}: upgrade the apiserver first`]
          : []
      })
    },
  },
  {
    id: 'controllers-at-most-one-minor-older',
    severity: 'overridable',
    overrideFlag: '--force',
    risk: 'a controller-manager or scheduler two minors behind may not understand what the apiserver now serves',
    violations: (inputs) => {
      const apiserverHigh = newest(after(inputs, 'kube-apiserver'))
      if (!apiserverHigh) return []
      return CONTROLLERS.flatMap((component) => {
        const low = oldest(after(inputs, component))
        return low && apiserverHigh.minor - low.minor > 1
          ? [
              `${component} would stay at ${formatVersion(low)}, more than one minor behind kube-apiserver ${formatVersion(apiserverHigh)}: include it in --components`,
            ]
          : []
      })
    },
  },
  {
    id: 'kubelets-not-newer-than-apiserver',
    severity: 'mandatory',
    violations: (inputs) => {
      const apiserverLow = oldest(after(inputs, 'kube-apiserver'))
      if (!apiserverLow) return []
      const ahead = inputs.kubelets.filter((k) => k.version.minor > apiserverLow.minor)
      return ahead.length > 0
        ? [
            `kubelets on ${nodeList(ahead.map((k) => k.node))} run ${minorOf(newest(ahead.map((k) => k.version))!)}, newer than kube-apiserver would be (${formatVersion(apiserverLow)})`,
          ]
        : []
    },
  },
  {
    id: 'kubelets-within-supported-lag',
    severity: 'overridable',
    overrideFlag: '--force',
    risk: 'kubelets older than the policy allows may fail against the new apiserver and stop managing the pods on their nodes',
    violations: (inputs) => {
      const apiserverHigh = newest(after(inputs, 'kube-apiserver'))
      if (!apiserverHigh) return []
      const behind = inputs.kubelets.filter((k) => apiserverHigh.minor - k.version.minor > maxKubeletLag(k.version))
      return behind.length > 0
        ? [
            `kubelets on ${nodeList(behind.map((k) => k.node))} (${minorOf(oldest(behind.map((k) => k.version))!)}) would be too far behind kube-apiserver ${formatVersion(apiserverHigh)} (at most 3 minors from 1.25, 2 before): upgrade them first`,
          ]
        : []
    },
  },
  {
    id: 'kube-proxy-not-newer-than-apiserver',
    severity: 'mandatory',
    violations: (inputs) => {
      const apiserverLow = oldest(after(inputs, 'kube-apiserver'))
      const high = newest(after(inputs, 'kube-proxy'))
      return apiserverLow && high && high.minor > apiserverLow.minor
        ? [`kube-proxy would run ${formatVersion(high)}, newer than kube-apiserver ${formatVersion(apiserverLow)}`]
        : []
    },
  },
  {
    id: 'kube-proxy-within-supported-lag',
    severity: 'overridable',
    overrideFlag: '--force',
    risk: 'a kube-proxy older than the policy allows may program Services wrongly against the new apiserver',
    violations: (inputs) => {
      const apiserverHigh = newest(after(inputs, 'kube-apiserver'))
      const low = oldest(after(inputs, 'kube-proxy'))
      return apiserverHigh && low && apiserverHigh.minor - low.minor > maxKubeletLag(low)
        ? [`kube-proxy would stay at ${formatVersion(low)}, too far behind kube-apiserver ${formatVersion(apiserverHigh)}: include it in --components`]
        : []
    },
  },
  {
    id: 'kube-proxy-matches-kubelets',
    severity: 'warning',
    // Before 1.25 kube-proxy had to match its node's kubelet minor; the plan upgrades
    // kube-proxy with the control plane (as kubeadm does), so kubelets come next.
    violations: (inputs) => {
      const proxy = newest(after(inputs, 'kube-proxy'))
      if (!proxy) return []
      const allowed = proxy.minor >= 25 ? 3 : 0
      const apart = inputs.kubelets.filter((k) => Math.abs(proxy.minor - k.version.minor) > allowed)
      return apart.length > 0
        ? [
            `kube-proxy ${minorOf(proxy)} and the kubelets on ${nodeList(apart.map((k) => k.node))} (${minorOf(oldest(apart.map((k) => k.version))!)}) are further apart than the policy allows: upgrade those kubelets next`,
          ]
        : []
    },
  },
]

/** Evaluates every rule; `blocking` marks what stops the upgrade given the flags. */
export function checkSkew(inputs: SkewInputs, overrides: {force: boolean; allowDowngrade: boolean}): CheckResult[] {
  return SKEW_RULES.map((rule) => {
    const violations = rule.violations(inputs)
    const passed = violations.length === 0
    const overridden =
      !passed &&
      rule.severity === 'overridable' &&
      ((rule.overrideFlag === '--force' && overrides.force) || (rule.overrideFlag === '--allow-downgrade' && overrides.allowDowngrade))
    return {
      id: rule.id,
      severity: rule.severity,
      passed,
      message: passed ? 'ok' : violations.join('; '),
      overrideFlag: rule.overrideFlag,
      risk: rule.risk,
      overridden,
      blocking: !passed && rule.severity !== 'warning' && !overridden,
    }
  })
}

/** The one line a refusal prints: the first blocking check, with its way out if it has one. */
export function refusalLine(check: CheckResult): string {
  const way = check.overrideFlag ? ` (${check.overrideFlag} overrides this; risk: ${check.risk})` : ''
  return `refused by ${check.id}: ${check.message}${way}`
}

const COMPONENT_ALIASES: Record<string, UpgradeComponent> = {
  apiserver: 'kube-apiserver',
  'controller-manager': 'kube-controller-manager',
  kcm: 'kube-controller-manager',
  scheduler: 'kube-scheduler',
  proxy: 'kube-proxy',
}

/** Parses --components: a comma list of full names or short ones (apiserver, controller-manager, scheduler, proxy). */
export function parseComponents(text: string): UpgradeComponent[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
  const resolved = names.map((name) => {
    const component = (UPGRADE_ORDER as readonly string[]).includes(name) ? (name as UpgradeComponent) : COMPONENT_ALIASES[name]
    if (!component) throw new CliError(`--components: "${name}" is not one of ${UPGRADE_ORDER.join(', ')} (or apiserver, controller-manager, scheduler, proxy)`)
    return component
  })
  if (resolved.length === 0) throw new CliError('--components is empty; name at least one component')
  return [...new Set(resolved)]
}
