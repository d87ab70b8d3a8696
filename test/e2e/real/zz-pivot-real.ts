import {execa} from 'execa'
import {startApiPoller} from './api-poller.js'
const kc = process.env.KUBECONFIG!
const poller = startApiPoller(kc)
const t0 = Date.now()
const r = await execa('node', ['/work/main/bin/run.js', ...process.argv.slice(2)], {reject: false, all: true})
const rep = await poller.stop()
console.log(r.all)
console.log('exit', r.exitCode, 'seconds', (Date.now() - t0) / 1000, JSON.stringify(rep))
