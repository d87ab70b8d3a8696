import {CliError} from './errors.js'

const UNIT_MS: Record<string, number> = {ms: 1, s: 1000, m: 60_000, h: 3_600_000}

/**
 * Parses a Go-style duration as kubectl accepts it ("30s", "1m30s", "2h", "500ms"; a bare
 * number means seconds) into milliseconds.
 */
export function parseDuration(text: string, flag: string): number {
  const trimmed = text.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)]
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== trimmed) {
    throw new CliError(`${flag} "${text}" is not a duration; use a form like 30s, 5m or 1h`)
  }

  return parts.reduce((ms, [, n, unit]) => ms + Number(n) * UNIT_MS[unit], 0)
}

export function formatAge(ms: number): string {
  if (!Number.isFinite(ms)) return '-'
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.floor(s / 60)}m`
  if (s < 172_800) return `${Math.floor(s / 3600)}h`
  return `${Math.floor(s / 86_400)}d`
}
