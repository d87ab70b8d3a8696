import {existsSync, readdirSync, statSync} from 'node:fs'
import {delimiter, dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

import {execa} from 'execa'

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

function newestSource(dir: string): number {
  let newest = 0
  for (const entry of readdirSync(dir, {withFileTypes: true})) {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path))
    else if (entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(path).mtimeMs)
  }

  return newest
}

/**
 * Builds the package (tsc + oclif manifest) unless the build is newer than every source:
 * `npm test` has just built, a single test file run during development has not.
 */
export async function ensureBuilt(): Promise<void> {
  const manifest = join(repoRoot, 'oclif.manifest.json')
  const built = existsSync(manifest) && existsSync(join(repoRoot, 'dist', 'commands')) ? statSync(manifest).mtimeMs : 0
  const sources = Math.max(newestSource(join(repoRoot, 'commands')), newestSource(join(repoRoot, 'src')), statSync(join(repoRoot, 'package.json')).mtimeMs)
  if (built > sources) return
  await execa('npm', ['run', 'build'], {cwd: repoRoot})
}

/** The first executable of that name on PATH, as a shell would find it. */
export function onPath(command: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    const candidate = join(dir, command)
    try {
      if (dir && statSync(candidate).isFile()) return candidate
    } catch {
      // not in this directory
    }
  }

  return undefined
}
