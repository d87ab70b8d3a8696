import assert from 'node:assert/strict'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import type {Server} from 'node:net'
import {join} from 'node:path'

import {
  CONFIRM_SCRIPT,
  HANDOFF_DIR,
  HANDOFF_INTERRUPTED_EXIT,
  HANDOFF_RESTORED_EXIT,
  HANDOFF_SCRIPT,
  PREPARE_SCRIPT,
  READ_STATE_SCRIPT,
  RESTORE_SCRIPT,
  RETIRE_BACKUP_SCRIPT,
  activeBackup,
  backupStamp,
  nodeDirs,
  parseNodeState,
} from '../../../src/pivot/node-scripts.js'
import {hexPort} from '../../../src/node/listeners.js'
import {distrolessPath, runWithImageTools} from '../../helpers/distroless-tools.js'
import {eventually} from '../../helpers/eventually.js'
import {close, freePort, listen} from '../../helpers/sockets.js'

const MANIFEST = 'apiVersion: v1\nkind: Pod\n# kept byte for byte, including this comment and no final newline'
const STAMP = '20260101T000000Z'

/** A directory standing in for the node's "/", with the directories the kubelet makes for a task. */
function nodeRoot(): string {
  const root = mkdtempSync(join(tmpdir(), 'pivot-script-'))
  mkdirSync(join(root, 'etc/kubernetes/manifests'), {recursive: true})
  for (const dir of nodeDirs(STAMP)) mkdirSync(join(root, dir), {recursive: true})
  writeFileSync(join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml'), MANIFEST)
  return root
}

const toolsOnly = distrolessPath()

/** Runs a script as a node task would in the kube-proxy image: dash and its few tools only. */
const sh = (script: string, env: Record<string, string>, onStart?: (kill: () => void) => void) => runWithImageTools(script, env, onStart, toolsOnly)

describe('pivot node scripts (dash with only the kube-proxy image tools, on a directory standing in for the node)', function () {
  this.timeout(30_000)
  const live = (root: string) => join(root, 'etc/kubernetes/manifests/kube-apiserver.yaml')
  const backup = (root: string) => join(root, `etc/kubernetes/selfhost/backup/${STAMP}/kube-apiserver.yaml`)
  const env = (root: string) => ({HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP})
  const dotFiles = (root: string) => readdirSync(join(root, 'etc/kubernetes/manifests')).filter((f) => f.startsWith('.'))

  it('backs up byte for byte (a second name of the original), never over an existing backup, and the state read finds both', async () => {
    const root = nodeRoot()
    const before = statSync(live(root)).ino
    const first = await sh(PREPARE_SCRIPT, {...env(root), NEW_CONTENT: 'rewritten\nwith lines'})
    assert.equal(first.code, 0, first.out)
    assert.equal(statSync(backup(root)).ino, before, 'the backup is the original file itself')
    assert.equal(readFileSync(live(root), 'utf8'), 'rewritten\nwith lines')
    assert.notEqual(statSync(live(root)).ino, before, 'the rewrite is a new file, the original untouched')
    assert.equal((await sh(PREPARE_SCRIPT, env(root))).code, 0)
    const state = parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out)
    assert.equal(state.manifests['kube-apiserver'], 'rewritten\nwith lines')
    assert.equal(activeBackup(state)?.files['kube-apiserver'], MANIFEST)
    assert.equal(activeBackup(state)?.stamp, STAMP)
  })

  it('reads content byte for byte whatever it holds: no final newline, empty lines, "end" lines, non-ASCII', async () => {
    const root = nodeRoot()
    const tricky = 'a: 1\n\nend\nbegin manifest x 3\n\u00e9t\u00e9 \u2713\n\n'
    writeFileSync(live(root), tricky)
    const state = parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out)
    assert.equal(state.manifests['kube-apiserver'], tricky)
  })

  it('an unconfirmed hand-off puts the manifest back at its deadline (exit 3)', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    const r = await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '2', TOKEN: 't1'})
    assert.equal(r.code, HANDOFF_RESTORED_EXIT, r.out)
    assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
    assert.ok(!existsSync(join(root, HANDOFF_DIR, 'kube-apiserver.yaml')), 'nothing held any more')
  })

  it('a confirmed hand-off leaves the manifest gone and the original in the backup; a wrong token does not count', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    const watchdog = sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '20', TOKEN: 'right'})
    await new Promise((r) => setTimeout(r, 500))
    assert.ok(!existsSync(live(root)), "out of the kubelet's sight while waiting")
    const held = parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out)
    assert.equal(held.held['kube-apiserver'], MANIFEST, 'the state read reports the held manifest')
    assert.equal((await sh(CONFIRM_SCRIPT, {...env(root), TOKEN: 'wrong'})).code, 0)
    await new Promise((r) => setTimeout(r, 1500))
    assert.ok(!existsSync(live(root)))
    assert.equal((await sh(CONFIRM_SCRIPT, {...env(root), TOKEN: 'right'})).code, 0)
    const r = await watchdog
    assert.equal(r.code, 0, r.out)
    assert.ok(!existsSync(live(root)))
    assert.equal(readFileSync(backup(root), 'utf8'), MANIFEST)
    assert.deepEqual(parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out).held, {})
  })

  describe("with port sharing (PORT, SETTLE): real sockets in the kernel's /proc/net/tcp", () => {
    const servers: Server[] = []
    afterEach(async () => {
      for (const server of servers.splice(0)) await close(server)
    })

    it('moves the static manifest only once a second process has listened beside the static one for SETTLE seconds', async () => {
      const root = nodeRoot()
      await sh(PREPARE_SCRIPT, env(root))
      const port = await freePort()
      servers.push(await listen(port, '127.0.0.1')) // the static instance alone
      const watchdog = sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '20', TOKEN: 'tk', PORT: hexPort(port), SETTLE: '1'})
      await new Promise((r) => setTimeout(r, 1500))
      assert.ok(existsSync(live(root)), 'one listener: the static manifest stays in place')
      servers.push(await listen(port, '127.0.0.2')) // the self-hosted instance binds beside it
      const joined = Date.now()
      await eventually('the static manifest to move', 10_000, () => !existsSync(live(root)), 50)
      assert.ok(!existsSync(live(root)), 'moved once two processes listened')
      assert.ok(Date.now() - joined >= 900, `not before SETTLE: moved ${Date.now() - joined}ms after the second listener`)
      assert.equal((await sh(CONFIRM_SCRIPT, {...env(root), TOKEN: 'tk'})).code, 0)
      const r = await watchdog
      assert.equal(r.code, 0, r.out)
      assert.match(r.out, new RegExp(`a second process listened on port ${port} beside the static kube-apiserver for 1s`))
    })

    it('leaves the static manifest where it is when no second process listens within the deadline (exit 3)', async () => {
      const root = nodeRoot()
      await sh(PREPARE_SCRIPT, env(root))
      const port = await freePort()
      servers.push(await listen(port, '127.0.0.1'))
      const r = await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '2', TOKEN: 'tk', PORT: hexPort(port), SETTLE: '1'})
      assert.equal(r.code, HANDOFF_RESTORED_EXIT, r.out)
      assert.match(r.out, new RegExp(`no second process listened on port ${port} .* the static manifest stays`))
      assert.doesNotMatch(r.out, /moved/)
      assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
      assert.ok(!existsSync(join(root, HANDOFF_DIR, 'kube-apiserver.yaml')), 'never held')
    })
  })

  it('a hand-off stopped early (pod deleted: SIGTERM) puts the manifest back at once', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    const started = Date.now()
    const r = await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '60', TOKEN: 't'}, (kill) => setTimeout(kill, 800))
    assert.equal(r.code, HANDOFF_INTERRUPTED_EXIT, r.out)
    assert.ok(Date.now() - started < 5000)
    assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
  })

  it('while a hand-off runs, the node names its pod for any later run to find; the name goes when it ends, however it ends', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    const watchdogs = async () => parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out).watchdogs
    const pod = 'other-ns/selfhost-pivot-handoff-cp-1-abc123'
    // Stopped: its pod deleted.
    let stop = () => {}
    const stopped = sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '60', TOKEN: 't', NODE_TASK_POD: pod}, (kill) => (stop = kill))
    await eventually('the hand-off to hold the manifest', 5000, () => !existsSync(live(root)), 50)
    assert.deepEqual(await watchdogs(), {'kube-apiserver': pod})
    stop()
    assert.equal((await stopped).code, HANDOFF_INTERRUPTED_EXIT)
    assert.deepEqual(await watchdogs(), {})
    assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
    // Confirmed.
    const confirmed = sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '20', TOKEN: 'ok', NODE_TASK_POD: pod})
    await eventually('the hand-off to hold the manifest', 5000, () => !existsSync(live(root)), 50)
    assert.equal((await sh(CONFIRM_SCRIPT, {...env(root), TOKEN: 'ok'})).code, 0)
    assert.equal((await confirmed).code, 0)
    assert.deepEqual(await watchdogs(), {})
    // Not confirmed in time.
    writeFileSync(live(root), MANIFEST)
    assert.equal((await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '1', TOKEN: 'never', NODE_TASK_POD: pod})).code, HANDOFF_RESTORED_EXIT)
    assert.deepEqual(await watchdogs(), {})
  })

  it('a watchdog that ends leaves the name of a newer one alone, and a name cut short is no pod', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    const record = join(root, HANDOFF_DIR, 'kube-apiserver.watchdog')
    const older = sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '1', TOKEN: 't', NODE_TASK_POD: 'kube-system/older'})
    await eventually('the older watchdog to name itself', 5000, () => existsSync(record), 20)
    writeFileSync(record, 'kube-system/newer')
    assert.equal((await older).code, HANDOFF_RESTORED_EXIT)
    assert.equal(readFileSync(record, 'utf8'), 'kube-system/newer')
    writeFileSync(record, 'kube-sys')
    assert.deepEqual(parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out).watchdogs, {})
  })

  it('a re-run finds a held manifest (its watchdog died) and waits for confirmation again', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '0', TOKEN: 'x'}) // restores at once
    // A watchdog killed outright leaves the manifest held and none live:
    writeFileSync(join(root, HANDOFF_DIR, 'kube-apiserver.yaml'), MANIFEST)
    const {rmSync} = await import('node:fs')
    rmSync(live(root))
    const r = await sh(HANDOFF_SCRIPT, {...env(root), DEADLINE: '1', TOKEN: 'y'})
    assert.equal(r.code, HANDOFF_RESTORED_EXIT, r.out)
    assert.match(r.out, /already held/)
    assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
  })

  it('restore writes given content as a new file, drops a held copy; retire marks the directory', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, {...env(root), NEW_CONTENT: 'variant'})
    writeFileSync(join(root, HANDOFF_DIR, 'kube-apiserver.yaml'), MANIFEST)
    assert.equal((await sh(RESTORE_SCRIPT, {...env(root), CONTENT: 'with sharing'})).code, 0)
    assert.equal(readFileSync(live(root), 'utf8'), 'with sharing')
    assert.notEqual(statSync(live(root)).ino, statSync(backup(root)).ino, 'new content is a new file: the backup is never written into')
    assert.equal(readFileSync(backup(root), 'utf8'), MANIFEST)
    assert.ok(!existsSync(join(root, HANDOFF_DIR, 'kube-apiserver.yaml')), 'nothing held any more')
    assert.equal((await sh(RETIRE_BACKUP_SCRIPT, {HOST_ROOT: root, STAMP})).code, 0)
    const state = parseNodeState('cp-1', (await sh(READ_STATE_SCRIPT, {HOST_ROOT: root})).out)
    assert.equal(activeBackup(state), undefined)
    assert.equal(state.backups[0].reverted, true)
  })

  it('restoring the original writes no new data: the manifest becomes the backup file itself again, twice over, and a later rewrite leaves the backup alone', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, {...env(root), NEW_CONTENT: 'variant'})
    const original = statSync(backup(root)).ino
    for (const run of [1, 2]) {
      const r = await sh(RESTORE_SCRIPT, env(root))
      assert.equal(r.code, 0, r.out)
      assert.equal(statSync(live(root)).ino, original, `run ${run}: the manifest is a second name of the backup (bytes on disk already, nothing to flush)`)
      assert.equal(readFileSync(live(root), 'utf8'), MANIFEST)
      assert.deepEqual(dotFiles(root), [], `run ${run}: no temporary name left`)
    }

    const again = await sh(PREPARE_SCRIPT, {...env(root), NEW_CONTENT: 'rewritten after revert'})
    assert.equal(again.code, 0, again.out)
    assert.equal(readFileSync(live(root), 'utf8'), 'rewritten after revert')
    assert.notEqual(statSync(live(root)).ino, original, 'the rewrite is a new file renamed over the manifest')
    assert.equal(statSync(backup(root)).ino, original)
    assert.equal(readFileSync(backup(root), 'utf8'), MANIFEST, 'the backup keeps its bytes')
  })

  it('never writes into a temporary name a killed task left behind (it may be a second name of the backup or the manifest)', async () => {
    const root = nodeRoot()
    await sh(PREPARE_SCRIPT, env(root))
    // A restore or rewrite killed between its two links leaves its dot-file as another name of the file it placed.
    const {linkSync} = await import('node:fs')
    linkSync(backup(root), join(root, 'etc/kubernetes/manifests/.kube-apiserver.yaml.selfhost-tmp'))
    const r = await sh(PREPARE_SCRIPT, {...env(root), NEW_CONTENT: 'port sharing'})
    assert.equal(r.code, 0, r.out)
    assert.equal(readFileSync(live(root), 'utf8'), 'port sharing')
    assert.equal(readFileSync(backup(root), 'utf8'), MANIFEST, 'the backup keeps its bytes')
    assert.deepEqual(dotFiles(root), [])
  })

  it('refuses to hand off what is neither live nor held, and to restore without a backup', async () => {
    const root = mkdtempSync(join(tmpdir(), 'pivot-script-'))
    for (const dir of nodeDirs('none')) mkdirSync(join(root, dir), {recursive: true})
    mkdirSync(join(root, 'etc/kubernetes/manifests'), {recursive: true})
    assert.equal((await sh(HANDOFF_SCRIPT, {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 'none', DEADLINE: '1', TOKEN: 't'})).code, 2)
    assert.equal((await sh(RESTORE_SCRIPT, {HOST_ROOT: root, COMPONENT: 'kube-apiserver', STAMP: 'none'})).code, 2)
  })

  it('refuses a cut-short or garbled state read', () => {
    assert.throws(() => parseNodeState('cp-1', 'begin manifest kube-apiserver 10\nabc'), /incomplete answer/)
    assert.throws(() => parseNodeState('cp-1', 'begin manifest kube-apiserver 3\nabcXend\nend-of-state\n'), /incomplete answer/)
    assert.throws(() => parseNodeState('cp-1', 'backup-dir x\n'), /incomplete answer/)
  })

  it('stamps sort by time', () => {
    assert.equal(backupStamp(new Date('2026-11-23T18:45:01.123Z')), '20261123T184501Z')
  })
})
