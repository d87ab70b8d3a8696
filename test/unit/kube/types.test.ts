import {strict as assert} from 'node:assert'
import {readFileSync, readdirSync} from 'node:fs'
import {join, relative} from 'node:path'

import {repoRoot} from '../../helpers/build.js'

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, {withFileTypes: true}).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith('.ts') ? [path] : []
  })
}

describe('kube/types: one source of API object types', () => {
  it('only src/kube/types.ts imports client-node statically, and only its types (its Dates are strings on the wire)', () => {
    const importers = [...sourceFiles(join(repoRoot, 'src')), ...sourceFiles(join(repoRoot, 'commands'))]
      .filter((file) => /^\s*(?:import|export)\b[^;]*?from '@kubernetes\/client-node'/m.test(readFileSync(file, 'utf8')))
      .map((file) => relative(repoRoot, file))
    assert.deepEqual(importers, [join('src', 'kube', 'types.ts')])
    assert.match(readFileSync(join(repoRoot, 'src', 'kube', 'types.ts'), 'utf8'), /^import type \* as k8s from '@kubernetes\/client-node'$/m)
  })
})
