/**
 * Greedy word wrap: words joined by one space, a new line before any word that would take the
 * line past `room` characters (a longer word gets a line of its own). No imports, so the help
 * renderer can use it without loading anything else.
 */
export function wrapWords(words: string[], room: number): string[] {
  const lines: string[] = []
  let line = ''
  for (const word of words) {
    if (line && line.length + 1 + word.length > room) {
      lines.push(line)
      line = word
    } else {
      line = line ? `${line} ${word}` : word
    }
  }

  lines.push(line)
  return lines
}
