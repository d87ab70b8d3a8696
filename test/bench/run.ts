/**
 * `npm run bench`: runs every test/bench/*.bench.ts (each default-exports a Benchmark) and
 * prints its figures. Add a benchmark by adding a file; nothing here needs to change.
 */
import {readdirSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'

import type {Benchmark} from './lib.js'

const here = dirname(fileURLToPath(import.meta.url))
const only = process.argv.slice(2)
const files = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort()

const missed: string[] = []
for (const file of files) {
  const bench = (await import(pathToFileURL(join(here, file)).href)).default as Benchmark
  console.log(`${bench.name}  [${file}]`)
  const report = await bench.run()
  for (const line of report.lines) console.log(`  ${line}`)
  if (report.metTargets === false) missed.push(bench.name)
  console.log()
}

console.log(missed.length === 0 ? 'all targets met' : `targets missed: ${missed.join('; ')}`)
