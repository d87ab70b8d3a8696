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

// The tests' one poll loop and one way to run the built CLI, shared with the unit and command tests.
export {eventually} from '../helpers/eventually.js'
export {runBuiltCli} from '../helpers/run-command.js'
