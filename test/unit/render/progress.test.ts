import assert from 'node:assert/strict'
import {clearLine, cursorTo, moveCursor} from 'node:readline'
import {PassThrough} from 'node:stream'

import {startProgress} from '../../../src/render/progress.js'

function capture(isTTY: boolean): {stream: NodeJS.WriteStream; text: () => string} {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream & {isTTY: boolean; columns: number}
  stream.isTTY = isTTY
  stream.columns = 100
  // What a tty.WriteStream adds: the escape sequences a live line is redrawn with.
  Object.assign(stream, {
    cursorTo: (x: number) => cursorTo(stream, x),
    clearLine: (dir: -1 | 0 | 1) => clearLine(stream, dir),
    moveCursor: (dx: number, dy: number) => moveCursor(stream, dx, dy),
  })
  let out = ''
  ;(stream as unknown as PassThrough).on('data', (c: Buffer) => (out += c.toString()))
  return {stream, text: () => out}
}

const plain = (s: string) => s.replace(/\u001B\[[0-9;?]*[A-Za-z]/g, '')

describe('progress', () => {
  it('writes one plain line per step where nothing can be rewritten', async () => {
    const {stream, text} = capture(false)
    const progress = await startProgress(stream)
    progress.step('applied DaemonSet')
    progress.step('cp-1: handing off')
    progress.stop()
    assert.equal(text(), 'applied DaemonSet\ncp-1: handing off\n')
  })

  it('on a terminal keeps finished steps above a live line and closes the last one on stop', async () => {
    const {stream, text} = capture(true)
    const progress = await startProgress(stream, true)
    progress.step('applied DaemonSet')
    progress.step('cp-1: handing off')
    progress.stop()
    const shown = plain(text())
    assert.match(shown, /✓ applied DaemonSet\n/)
    assert.match(shown, /✓ cp-1: handing off\n/)
    assert.ok(shown.indexOf('✓ applied DaemonSet') < shown.indexOf('✓ cp-1: handing off'))
    assert.match(text(), /\u001B\[/, 'a live view rewrites its line with terminal escapes')
  })
})
