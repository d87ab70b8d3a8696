import assert from 'node:assert/strict'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'

import type {FrontendTrace} from '../../../src/trace/model.js'

const probe = fileURLToPath(new URL('probe.mjs', import.meta.url))

/** Listens on `listen` inside network namespace `netns`, connects to each target; where each landed. */
export async function probeInNamespace(
  netns: string,
  listen: string[],
  targets: Array<{target: string; count: number}>,
): Promise<Record<string, Record<string, number>>> {
  const plan = {listen: [...new Set(listen)], connect: targets}
  const {stdout} = await execa('ip', ['netns', 'exec', netns, process.execPath, probe, JSON.stringify(plan)])
  return JSON.parse(stdout)
}

/** What trace predicts for a frontend, keyed the way the probe reports landings. */
export function predictions(frontend: FrontendTrace): Map<string, number> {
  const predicted = new Map<string, number>()
  const add = (key: string, share: number) => predicted.set(key, (predicted.get(key) ?? 0) + share)
  for (const e of frontend.endpoints) add(`${e.ip}:${e.port}`, e.share)
  for (const v of frontend.verdicts) {
    // Unchanged packets reach our listener on the ClusterIP itself. REJECT and DROP both reach
    // nothing; they are not told apart because ICMP errors for local traffic do not reach the
    // socket on every kernel (seen here: REJECT shows as a timeout, a tcp-reset as refused).
    add(v.kind === 'unhandled' ? frontend.address : 'refused', v.share)
  }

  return predicted
}

/**
 * Every landing must be one trace listed, and each count must lie within 5 standard
 * deviations of n*share (binomial): a false alarm has odds below 1 in a million per bucket.
 */
export function assertKernelAgrees(frontend: FrontendTrace, landed: Record<string, number>, connections: number): void {
  const predicted = predictions(frontend)
  const total = Object.values(landed).reduce((a, b) => a + b, 0)
  assert.equal(total, connections)
  for (const [where, count] of Object.entries(landed)) {
    assert.ok(
      (predicted.get(where) ?? 0) > 0,
      `${count} connection(s) to ${frontend.address} landed on ${where}, which trace did not list (trace: ${JSON.stringify([...predicted])})`,
    )
  }

  for (const [where, share] of predicted) {
    const expected = connections * share
    const bound = 5 * Math.sqrt(connections * share * (1 - share)) + 1
    const observed = landed[where] ?? 0
    assert.ok(
      Math.abs(observed - expected) <= bound,
      `${where}: kernel ${observed}/${connections}, trace ${(share * 100).toFixed(1)}% (expected ${expected.toFixed(1)} ± ${bound.toFixed(1)}); all: ${JSON.stringify(landed)}`,
    )
  }
}
