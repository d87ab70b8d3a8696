/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({length: a.length + 1}, (_, i) => [i, ...Array.from({length: b.length}, (_, j) => (i === 0 ? j + 1 : 0))])
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }

  return d[a.length][b.length]
}

/** Names close to `wanted`: containing it, contained in it, or a few edits away; best first. */
export function closeMatches(wanted: string, candidates: string[], limit = 5): string[] {
  const allowed = Math.max(1, Math.floor(wanted.length / 3))
  return candidates
    .map((name) => ({name, score: name.includes(wanted) || wanted.includes(name) ? 0.5 : editDistance(wanted, name)}))
    .filter((c) => c.score <= allowed)
    .sort((x, y) => x.score - y.score || x.name.localeCompare(y.name))
    .slice(0, limit)
    .map((c) => c.name)
}
