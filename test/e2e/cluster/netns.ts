import {execFile, execFileSync} from 'node:child_process'
import {promisify} from 'node:util'

const run = promisify(execFile)

/**
 * A worker node's own network namespace, tied to the host by a veth pair. Its addresses
 * come from 198.18.0.0/15 (reserved for benchmarking, RFC 2544), one /30 per node, and are
 * used only between the host and namespaces this harness made. The namespace gets no
 * default route: nothing in it can reach past the host end of its link.
 */
export interface NodeNetwork {
  netns: string
  /** The node's InternalIP, inside the namespace. */
  nodeIp: string
  /** The host end of the veth pair, where the harness forwards to the API server and kwok. */
  hostIp: string
  hostInterface: string
}

/** One /24 of 198.18.0.0/15 per cluster; index 0..511. */
export interface AddressBlock {
  prefix: string
}

async function ip(args: string[]): Promise<void> {
  try {
    await run('ip', args)
  } catch (error) {
    const stderr = (error as {stderr?: string}).stderr?.trim()
    throw new Error(`ip ${args.join(' ')}: ${stderr || (error as Error).message}`)
  }
}

/** Picks a /24 of 198.18.0.0/15 that no interface on this machine uses yet. */
export async function pickAddressBlock(): Promise<AddressBlock> {
  const {stdout} = await run('ip', ['-o', '-4', 'addr', 'show'])
  const used = new Set([...stdout.matchAll(/inet (198\.1[89]\.\d+)\.\d+/g)].map((m) => m[1]))
  const candidates: string[] = []
  for (let i = 0; i < 512; i++) {
    const prefix = `198.${18 + (i >> 8)}.${i & 255}`
    if (!used.has(prefix)) candidates.push(prefix)
  }
  if (candidates.length === 0) throw new Error('no free /24 left in 198.18.0.0/15 for test node networks')
  return {prefix: candidates[Math.floor(Math.random() * candidates.length)]}
}

/** The addresses of the index-th node network of a block (a /30 each, up to 64). */
export function nodeAddresses(block: AddressBlock, index: number): {hostIp: string; nodeIp: string} {
  if (index < 0 || index > 63) throw new Error(`node network index ${index} out of range 0..63`)
  return {hostIp: `${block.prefix}.${index * 4 + 1}`, nodeIp: `${block.prefix}.${index * 4 + 2}`}
}

export async function createNodeNetwork(opts: {
  netns: string
  interfacePrefix: string
  block: AddressBlock
  index: number
  serviceCidr: string
}): Promise<NodeNetwork> {
  const {hostIp, nodeIp} = nodeAddresses(opts.block, opts.index)
  const hostInterface = `${opts.interfacePrefix}h${opts.index}`
  const nodeInterface = `${opts.interfacePrefix}n${opts.index}`
  if (hostInterface.length > 15) throw new Error(`interface name ${hostInterface} is longer than 15 characters`)
  await ip(['netns', 'add', opts.netns])
  const network = {netns: opts.netns, nodeIp, hostIp, hostInterface}
  try {
    await ip(['link', 'add', hostInterface, 'type', 'veth', 'peer', 'name', nodeInterface, 'netns', opts.netns])
    await ip(['addr', 'add', `${hostIp}/30`, 'dev', hostInterface])
    await ip(['link', 'set', hostInterface, 'up'])
    await ip(['-n', opts.netns, 'link', 'set', 'lo', 'up'])
    await ip(['-n', opts.netns, 'addr', 'add', `${nodeIp}/30`, 'dev', nodeInterface])
    await ip(['-n', opts.netns, 'link', 'set', nodeInterface, 'up'])
    // A connection to a ClusterIP needs a route before kube-proxy's DNAT rewrites it. Via lo,
    // a packet no rule rewrites dies here instead of leaving the namespace.
    await ip(['-n', opts.netns, 'route', 'add', opts.serviceCidr, 'dev', 'lo', 'src', nodeIp])
  } catch (error) {
    deleteNodeNetworkSync(network)
    throw error
  }

  return network
}

/** Removes the namespace; the veth pair goes with it. Synchronous, for exit handlers. */
export function deleteNodeNetworkSync(network: Pick<NodeNetwork, 'netns' | 'hostInterface'>): void {
  for (const args of [
    ['netns', 'del', network.netns],
    ['link', 'del', network.hostInterface],
  ]) {
    try {
      execFileSync('ip', args, {stdio: 'ignore'})
    } catch {
      // Already gone.
    }
  }
}

export function netnsExists(name: string): boolean {
  try {
    return execFileSync('ip', ['netns', 'list'], {encoding: 'utf8'})
      .split('\n')
      .some((line) => line.split(' ')[0] === name)
  } catch {
    return false
  }
}
