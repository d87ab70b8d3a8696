import {join} from 'node:path'

import {execa} from 'execa'

import {repoRoot} from '../helpers/build.js'
import {MissingPrerequisiteError} from './cluster/binaries.js'
import {type TestCluster, type TestClusterOptions, startTestCluster} from './cluster/harness.js'
import {inCI} from '../helpers/ci.js'

/**
 * Starts the test cluster for a suite. A laptop without root or Go skips the suite, saying
 * why; CI must fail instead.
 */
export async function startTestClusterOrSkip(context: Mocha.Context, suite: string, options: TestClusterOptions): Promise<TestCluster> {
  try {
    return await startTestCluster(options)
  } catch (error) {
    if (error instanceof MissingPrerequisiteError && !inCI()) {
      console.warn(`skipping ${suite} e2e: ${error.message}`)
      context.skip()
    }

    throw error
  }
}

/** Polls `probe` until it returns a value, or fails naming what it waited for. */
export async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, pollMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
}

/**
 * Runs the built CLI (bin/run.js) as a user would, without colour. It never rejects: await it
 * for {exitCode, stdout, stderr}, or use the running process (signals, output as it comes).
 */
export function runBuiltCli(args: string[], env: Record<string, string> = {}) {
  return execa(process.execPath, [join(repoRoot, 'bin', 'run.js'), ...args], {env: {...process.env, NO_COLOR: '1', ...env}, reject: false})
}
