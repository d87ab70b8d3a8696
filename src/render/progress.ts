import type {Ora} from 'ora'

/** Where a mutating command reports its steps as they happen. */
export interface Progress {
  /** A new step: it becomes the live line; the one before it is kept above as done. */
  step(line: string): void
  /** Ends the live view; call in `finally`, so output after it starts on a clean line. */
  stop(): void
}

/**
 * On a terminal: a live line with a spinner for the step under way, earlier steps kept above
 * it. Anywhere else (pipes, files, CI): one plain line per step, nothing rewritten.
 */
export async function startProgress(stream: NodeJS.WriteStream = process.stderr, live = Boolean(stream.isTTY) && !process.env.CI): Promise<Progress> {
  if (!live) return {step: (line) => stream.write(`${line}\n`), stop() {}}
  const {default: ora} = await import('ora')
  // discardStdin off: Ctrl-C must reach the command's own SIGINT handling (node-pod cleanup).
  // hideCursor off: a command killed mid-step must not leave the terminal without a cursor.
  const spinner: Ora = ora({stream, discardStdin: false, hideCursor: false, isEnabled: true})
  let current: string | undefined
  const persist = () => {
    if (current !== undefined) spinner.stopAndPersist({symbol: '✓', text: current})
  }

  return {
    step(line) {
      persist()
      current = line
      spinner.start(line)
    },
    stop() {
      persist()
      current = undefined
      spinner.stop()
    },
  }
}
