import {existsSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/**
 * The one answer every test gives to "is this CI?". `.ci/run` sets CI=true itself; other CI
 * systems set CI to true or 1. In CI a test that cannot run fails; elsewhere it may skip,
 * saying why.
 */
export function inCI(): boolean {
  const value = (process.env.CI ?? '').trim().toLowerCase()
  return value !== '' && value !== 'false' && value !== '0'
}

// On globalThis: under tsx this module can be loaded twice (ES module and CommonJS), and the
// reason is to be said once per run.
const warned: Set<string> = ((globalThis as {selfhostSharedFixtureNotes?: Set<string>}).selfhostSharedFixtureNotes ??= new Set())

/**
 * The real-world fixtures in ../shared/fixtures/<kind> (beside the checkout in the project's own
 * clones and in CI), or undefined on a clone without them. In CI they must be there: the tests
 * that read them must not vanish. Elsewhere the run says once, in one line, why they are skipped.
 */
export function sharedFixturesDir(kind: 'kubeadm' | 'kube-proxy'): string | undefined {
  const dir = join(repoRoot, '..', 'shared', 'fixtures', kind)
  if (existsSync(dir)) return dir
  if (inCI()) throw new Error(`${dir} is missing: CI runs with the project's shared fixtures beside the checkout`)
  if (!warned.has(kind)) {
    warned.add(kind)
    console.warn(
      `note: tests over real-world ${kind} fixtures are skipped: ../shared/fixtures/${kind} is not beside this checkout (it comes with the project's workspace, not the repository)`,
    )
  }

  return undefined
}
