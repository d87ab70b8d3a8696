import {ChildProcess, spawn} from 'node:child_process'
import {createWriteStream, existsSync, readFileSync, readdirSync, type WriteStream} from 'node:fs'
import {join} from 'node:path'
import {createInterface} from 'node:readline'
import type {Readable} from 'node:stream'

/** A line as the kubelet's CRI log files hold it, which is what kwok's log server reads. */
export function criLogLine(stream: 'stdout' | 'stderr', line: string, at = new Date()): string {
  return `${at.toISOString()} ${stream} F ${line}\n`
}

function pipeAsCriLog(source: Readable | null, stream: 'stdout' | 'stderr', sink: WriteStream): void {
  if (!source) return
  createInterface({input: source, crlfDelay: Infinity}).on('line', (line) => sink.write(criLogLine(stream, line)))
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** Where stdout and stderr go, in CRI log format (so `kubectl logs` can serve them). */
  logFile: string
  /** Called once when the process ends. */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void
}

export interface Supervised {
  name: string
  child: ChildProcess
  logFile: string
  /** Resolves when the process has ended and its log is flushed. */
  exited: Promise<{code: number | null; signal: NodeJS.Signals | null}>
  running(): boolean
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

/** Whether a process of that id still exists (signal 0 checks without sending anything). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * Clusters whose harness died without stopping them (killed test runs) leave processes,
 * namespaces and files behind: for each directory under root whose state.json names a harness
 * that is gone, tearDown removes what it lists. The next start calls this.
 */
export function reapAbandoned<State extends {harnessPid: number}>(root: string, tearDown: (dir: string, state: State) => void): void {
  if (!existsSync(root)) return
  for (const entry of readdirSync(root)) {
    const dir = join(root, entry)
    let state: State
    try {
      state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as State
    } catch {
      continue
    }

    if (!alive(state.harnessPid)) tearDown(dir, state)
  }
}

/**
 * Every process a test cluster starts. Each child leads its own process group, so stopping
 * it also stops what it started (a shell's children, `ip netns exec`'s command), and a
 * terminal's Ctrl-C reaches only the harness, which then tears down in order.
 */
export class ProcessGroup {
  private readonly members: Supervised[] = []

  spawn(name: string, command: string, args: string[], options: SpawnOptions): Supervised {
    const log = createWriteStream(options.logFile, {flags: 'a'})
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    pipeAsCriLog(child.stdout, 'stdout', log)
    pipeAsCriLog(child.stderr, 'stderr', log)
    let ended = false
    const exited = new Promise<{code: number | null; signal: NodeJS.Signals | null}>((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (ended) return
        ended = true
        options.onExit?.(code, signal)
        log.end(() => resolve({code, signal}))
      }

      child.once('error', (error) => {
        log.write(criLogLine('stderr', `failed to start ${command}: ${error.message}`))
        finish(127, null)
      })
      // 'close' (not 'exit'): stdout and stderr are drained into the log by then.
      child.once('close', finish)
    })
    const member: Supervised = {name, child, logFile: options.logFile, exited, running: () => !ended}
    this.members.push(member)
    return member
  }

  /**
   * Stops one process and its group: SIGTERM (to the whole group, or as a container runtime
   * does, to the leader alone), then SIGKILL to the group after the grace period.
   */
  async stop(member: Supervised, graceMs = 5000, terminate: 'group' | 'leader' = 'group'): Promise<void> {
    if (!member.running() || member.child.pid === undefined) return
    if (terminate === 'group') signalGroup(member.child.pid, 'SIGTERM')
    else {
      try {
        process.kill(member.child.pid, 'SIGTERM')
      } catch {
        // Already gone.
      }
    }
    const timer = setTimeout(() => signalGroup(member.child.pid!, 'SIGKILL'), graceMs)
    await member.exited
    clearTimeout(timer)
    // The leader may be gone while a grandchild lingers.
    signalGroup(member.child.pid, 'SIGKILL')
  }

  /** Stops everything, most recently started first (kwok before the apiserver before etcd). */
  async stopAll(graceMs = 5000): Promise<void> {
    for (const member of [...this.members].reverse()) await this.stop(member, graceMs)
  }

  /**
   * The same, synchronously: for process 'exit' handlers and signals, where no promise will
   * ever be awaited again.
   */
  killAllSync(graceMs = 3000): void {
    const pids = this.members.filter((m) => m.running() && m.child.pid !== undefined).map((m) => m.child.pid!)
    for (const pid of pids) signalGroup(pid, 'SIGTERM')
    const deadline = Date.now() + graceMs
    while (Date.now() < deadline && pids.some(alive)) sleepSync(50)
    for (const pid of pids) signalGroup(pid, 'SIGKILL')
  }

  pids(): number[] {
    return this.members.filter((m) => m.running() && m.child.pid !== undefined).map((m) => m.child.pid!)
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    // Already gone.
  }
}
