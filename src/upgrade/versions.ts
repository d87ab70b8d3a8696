import semver, {SemVer} from 'semver'

import {CliError} from '../errors.js'

/** The oldest release this tool supports (the user's own example upgrades 1.14 -> 1.15). */
export const OLDEST_SUPPORTED_MINOR = 14
/** The newest release this tool was written against; newer targets get a warning, not a refusal. */
export const NEWEST_KNOWN_MINOR = 37

// semver alone also accepts surrounding blanks; a version on the command line must be exact.
const VERSION_ARGUMENT = /^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/

/**
 * Parses the --version argument: `v1.15.0` or `1.15.0`, pre-releases (`v1.16.0-rc.1`)
 * allowed. Anything else is one clear line.
 */
export function parseTargetVersion(text: string): SemVer {
  const parsed = VERSION_ARGUMENT.test(text) ? semver.parse(text) : null
  if (!parsed) {
    throw new CliError(`--version "${text}" is not a Kubernetes version; use the form v1.15.0 (or 1.15.0, v1.16.0-rc.1)`)
  }

  if (parsed.major !== 1) throw new CliError(`--version "${text}": Kubernetes versions are 1.x.y`)
  if (parsed.minor < OLDEST_SUPPORTED_MINOR) {
    throw new CliError(`--version "${text}": versions older than v1.${OLDEST_SUPPORTED_MINOR}.0 are not supported`)
  }

  return parsed
}

/**
 * Parses a version the cluster reports (an image tag, /version gitVersion, a kubelet's
 * version). Vendor builds carry extras (`v1.28.3+k3s1`, `v1.27.4-eks-2d98532`), so this is
 * lenient; undefined when the text holds no version at all (e.g. an image tag `latest`).
 */
export function parseReportedVersion(text: string | undefined): SemVer | undefined {
  if (!text) return undefined
  return semver.parse(text.trim()) ?? semver.coerce(text) ?? undefined
}

/** Always with the leading "v", as Kubernetes spells its versions and image tags. */
export function formatVersion(version: SemVer): string {
  return `v${version.version}`
}

export const minorOf = (version: SemVer): string => `1.${version.minor}`

/** Minor versions from `from` to `to` (positive when `to` is newer). */
export const minorDistance = (from: SemVer, to: SemVer): number => to.minor - from.minor

/** Same release: build metadata (`+k3s1`) does not make a different Kubernetes version. */
export const sameVersion = (a: SemVer, b: SemVer): boolean => semver.compare(a, b) === 0

export const isNewer = (a: SemVer, than: SemVer): boolean => semver.compare(a, than) > 0

/** `--permit-port-sharing` (SO_REUSEPORT) on apiserver, controller-manager and scheduler. */
export const supportsPortSharing = (v: SemVer): boolean => v.minor >= 19

/** DaemonSet rollingUpdate.maxSurge: beta and on by default from 1.22 (GA in 1.25). */
export const supportsDaemonSetSurge = (v: SemVer): boolean => v.minor >= 22

/** Where kubeadm pulls images by default for a release: registry.k8s.io from 1.25. */
export const defaultRegistryFor = (v: SemVer): string => (v.minor >= 25 ? 'registry.k8s.io' : 'k8s.gcr.io')

/** The legacy registry was frozen in April 2023: nothing from 1.27 on was published there. */
export const LEGACY_REGISTRY = 'k8s.gcr.io'
export const legacyRegistryLacks = (v: SemVer): boolean => v.minor >= 27

/** How far a kubelet (or kube-proxy) may lag the apiserver: three minors from 1.25, two before. */
export const maxKubeletLag = (kubelet: SemVer): number => (kubelet.minor >= 25 ? 3 : 2)
