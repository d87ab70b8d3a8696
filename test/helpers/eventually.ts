import {pollUntil} from '../../src/kube/wait.js'

/**
 * The tests' one poll loop: polls `probe` until it returns a value other than undefined or
 * false, or fails naming what it waited for. Built on the CLI's own pollUntil, so tests wait
 * the way the CLI does.
 */
export function eventually<T>(what: string, timeoutMs: number, probe: () => T | undefined | false | Promise<T | undefined | false>, pollMs = 250): Promise<T> {
  return pollUntil(
    async () => {
      const value = await probe()
      return {done: value !== undefined && value !== false, value: value as T, progress: ''}
    },
    {what, timeoutMs, intervalMs: pollMs},
  )
}
