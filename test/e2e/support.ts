import {MissingPrerequisiteError} from './cluster/binaries.js'
import {type TestCluster, type TestClusterOptions, startTestCluster} from './cluster/harness.js'
import {inCI} from '../helpers/ci.js'

/**
 * Runs what a suite needs first (a cluster, binaries, a tool). What this machine lacks (no root,
 * no Go) makes a laptop skip the suite or test, saying why; CI must fail instead.
 */
export async function orSkip<T>(context: Mocha.Context, what: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start()
  } catch (error) {
    if (error instanceof MissingPrerequisiteError && !inCI()) {
      console.warn(`skipping ${what}: ${error.message}`)
      context.skip()
    }

    throw error
  }
}

/** Starts the kwok test cluster for a suite, or skips it (see orSkip). */
export const startTestClusterOrSkip = (context: Mocha.Context, suite: string, options: TestClusterOptions): Promise<TestCluster> =>
  orSkip(context, `${suite} e2e`, () => startTestCluster(options))

// The tests' one poll loop and one way to run the built CLI, shared with the unit and command tests.
export {eventually} from '../helpers/eventually.js'
export {runBuiltCli} from '../helpers/run-command.js'
