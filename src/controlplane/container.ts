import type {V1Container} from '../kube/types.js'

/**
 * What a control-plane container's spec says about itself: the image it runs (registry,
 * name, tag, digest, and the version in the tag) and the flags on its command line.
 */

/** Splits an image into what comes before its name (the registry and path), name, tag and digest. */
export function splitImage(image: string): {prefix: string; name: string; tag?: string; digest?: string} {
  const [withoutDigest, digest] = image.split('@')
  // A colon before the last slash belongs to a registry's port (localhost:5000/...), not a tag.
  const slash = withoutDigest.lastIndexOf('/')
  const colon = withoutDigest.indexOf(':', slash + 1)
  const repository = colon < 0 ? withoutDigest : withoutDigest.slice(0, colon)
  const tag = colon < 0 ? undefined : withoutDigest.slice(colon + 1)
  const nameStart = repository.lastIndexOf('/')
  return {
    prefix: nameStart < 0 ? '' : repository.slice(0, nameStart),
    name: repository.slice(nameStart + 1),
    tag,
    digest,
  }
}

// A version as Kubernetes and etcd tag their images, with or without the "v": v1.32.4,
// 3.5.16-0 (etcd's image revision), v1.25.2-eks-1 or v1.28.3+k3s1 (vendor builds).
const VERSION_TAG = /^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/

/**
 * The version in an image's tag, as the tag spells it (`registry.k8s.io/kube-apiserver:v1.32.4`
 * -> v1.32.4, `registry.k8s.io/etcd:3.5.16-0` -> 3.5.16-0); undefined when the tag is no
 * version (`latest`) or there is none. Vendor and image-revision suffixes stay: this is what
 * the cluster runs, shown like a kubelet's reported version; compare it through
 * parseReportedVersion or semver.coerce.
 */
export function versionFromImage(image: string | undefined): string | undefined {
  const tag = image ? splitImage(image).tag : undefined
  return tag && VERSION_TAG.test(tag) ? tag : undefined
}

/** A component's own container in a pod spec: the one named after it, else the first. */
export function componentContainer<C extends Pick<V1Container, 'name'>>(containers: C[] | undefined, component: string): C | undefined {
  return containers?.find((c) => c.name === component) ?? containers?.[0]
}

/** The command line a container's process gets: its command, then its args. */
export function containerArgv(container: Pick<V1Container, 'command' | 'args'>): string[] {
  return [...(container.command ?? []), ...(container.args ?? [])]
}

/**
 * The value of a flag given as `--name=value` or `--name value`; the last occurrence wins, as
 * in pflag, which every Kubernetes component parses its flags with.
 */
export function flagValue(argv: string[], name: string): string | undefined {
  let value: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg.startsWith(`--${name}=`)) value = arg.slice(name.length + 3)
    else if (arg === `--${name}` && i + 1 < argv.length && !argv[i + 1].startsWith('-')) value = argv[i + 1]
  }

  return value
}

/** Go's strconv.ParseBool, which pflag uses for boolean flags. */
function parseGoBool(value: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(value)) return true
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(value)) return false
  return undefined
}

/** A pflag boolean: a bare --name means true, --name=<bool> sets it, the last occurrence wins. */
export function boolFlag(argv: string[], name: string, fallback: boolean): boolean {
  let value = fallback
  for (const arg of argv) {
    if (arg === `--${name}`) value = true
    else if (arg.startsWith(`--${name}=`)) value = parseGoBool(arg.slice(name.length + 3)) ?? value
  }

  return value
}

const DEFAULT_SECURE_PORTS: Record<string, number> = {'kube-apiserver': 6443, 'kube-controller-manager': 10257, 'kube-scheduler': 10259}

/** The port a control-plane component serves HTTPS on: its --secure-port, else its default. */
export function securePort(component: string, container: Pick<V1Container, 'command' | 'args'>): number {
  return Number(flagValue(containerArgv(container), 'secure-port') ?? DEFAULT_SECURE_PORTS[component])
}
