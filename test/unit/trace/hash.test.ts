import assert from 'node:assert/strict'
import {createHash} from 'node:crypto'

import {sha256} from '../../../src/trace/hash.js'

describe('sha256', () => {
  const expected = (input: string) => createHash('sha256').update(input).digest('hex')
  const actual = (input: string) => Buffer.from(sha256(input)).toString('hex')

  it('matches node:crypto on the FIPS 180-4 examples', () => {
    assert.equal(actual(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')
    assert.equal(actual('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
    assert.equal(actual('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'), '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1')
  })

  it('matches node:crypto at every length across the block and padding boundaries', () => {
    for (let length = 0; length <= 300; length++) {
      const input = Array.from({length}, (_, i) => String.fromCharCode(33 + ((i * 7 + length) % 94))).join('')
      assert.equal(actual(input), expected(input), `length ${length}`)
    }
  })

  it('hashes the UTF-8 bytes, as node:crypto does with a string', () => {
    for (const input of ['ns/ä-ö:port', '…', '名前/サービス:http', 'emoji 🙂 tcp', 'a'.repeat(1000) + 'é']) assert.equal(actual(input), expected(input), input)
  })
})
