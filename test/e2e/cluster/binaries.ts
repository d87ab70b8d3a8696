import {execFile, spawn} from 'node:child_process'
import {createWriteStream} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {promisify} from 'node:util'

const here = dirname(fileURLToPath(import.meta.url))

/** The programs a test cluster needs, in the bin dir build.sh fills. */
export const CLUSTER_BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kube-proxy', 'kubectl', 'kwok'] as const

/** A prerequisite is missing: the e2e suite fails on it in CI and skips (saying why) elsewhere. */
export class MissingPrerequisiteError extends Error {
  constructor(readonly missing: string[]) {
    super(`the test cluster cannot start here: ${missing.join('; ')}`)
    this.name = 'MissingPrerequisiteError'
  }
}

/**
 * Builds (or finds in the cache) the real control-plane binaries of one Kubernetes release
 * (build.sh's pinned one unless given) and returns their directory. A cache hit takes milliseconds; a cold build several minutes, so callers that
 * face a person show the build's progress (`progress: 'inherit'`).
 */
export async function ensureBinaries(progress: 'inherit' | 'quiet' = 'quiet', version?: string): Promise<string> {
  const buildLog = join(tmpdir(), `kubectl-selfhost-build${version ? `-${version}` : ''}.log`)
  const env = version ? {...process.env, K8S_VERSION: version} : process.env
  const child = spawn('bash', [join(here, 'build.sh')], {env, stdio: ['ignore', 'pipe', progress === 'inherit' ? 'inherit' : 'pipe']})
  let stdout = ''
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  if (child.stderr) child.stderr.pipe(createWriteStream(buildLog))
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject)
    child.once('close', resolve)
  })
  if (code !== 0) {
    const tail = progress === 'inherit' ? '' : `\n${(await readFile(buildLog, 'utf8').catch(() => '')).split('\n').slice(-30).join('\n')}`
    throw new MissingPrerequisiteError([`build.sh failed with exit code ${code} (log: ${buildLog})${tail}`])
  }

  return stdout.trim().split('\n').pop()!
}

const which = promisify(execFile)

export async function hasCommand(command: string): Promise<boolean> {
  try {
    await which('sh', ['-c', `command -v ${command}`])
    return true
  } catch {
    return false
  }
}

export const isRoot = (): boolean => process.getuid?.() === 0
