/** Edit distance (insertions, deletions, substitutions), for "did you mean". */
export function editDistance(a: string, b: string): number {
  let previous = Array.from({length: b.length + 1}, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }

    previous = current
  }

  return previous[b.length]
}

/** Names close to `wanted`: containing it, contained in it, or a few edits away; best first. */
export function closeMatches(wanted: string, candidates: string[], limit = 5): string[] {
  const scored = candidates
    .map((name) => {
      const distance = editDistance(wanted, name)
      const related = name.includes(wanted) || wanted.includes(name)
      return {name, score: related ? Math.min(distance, 1) : distance}
    })
    .filter((c) => c.score <= Math.max(2, Math.floor(wanted.length / 3)))
    .sort((x, y) => x.score - y.score || x.name.localeCompare(y.name))
  return scored.slice(0, limit).map((c) => c.name)
}
