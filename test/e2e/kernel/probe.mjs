// Runs INSIDE a test network namespace: listens on every endpoint address, then opens
// connections to each target and reports where the kernel's NAT sent them.
// Usage: node probe.mjs '{"listen":["10.0.0.1:80"],"connect":[{"target":"10.96.0.1:80","count":300}]}'
import net from 'node:net'

const plan = JSON.parse(process.argv[2])
const servers = []
for (const address of plan.listen) {
  const colon = address.lastIndexOf(':')
  const server = net.createServer((socket) => socket.end(`${socket.localAddress}:${socket.localPort}\n`))
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen({host: address.slice(0, colon), port: Number(address.slice(colon + 1)), exclusive: true}, resolve)
  })
  servers.push(server)
}

function connectOnce(target) {
  const colon = target.lastIndexOf(':')
  return new Promise((resolve) => {
    const socket = net.connect({host: target.slice(0, colon), port: Number(target.slice(colon + 1))})
    let data = ''
    const done = (landed) => {
      socket.destroy()
      resolve(landed)
    }
    // A REJECT answers with an ICMP error or a reset; a DROP with silence. Both: nothing reached.
    socket.setTimeout(1000, () => done('refused'))
    socket.on('data', (chunk) => (data += chunk))
    socket.on('end', () => done(data.trim() || 'empty'))
    socket.on('error', (error) => done(error.code === 'ECONNREFUSED' || error.code === 'ECONNRESET' ? 'refused' : `error:${error.code}`))
  })
}

const results = {}
for (const {target, count} of plan.connect) {
  const counts = {}
  // A few at a time: each connection is a new conntrack entry, so a new random choice.
  for (let i = 0; i < count; i += 10) {
    const batch = await Promise.all(Array.from({length: Math.min(10, count - i)}, () => connectOnce(target)))
    for (const landed of batch) counts[landed] = (counts[landed] ?? 0) + 1
  }
  results[target] = counts
}

for (const server of servers) server.close()
process.stdout.write(JSON.stringify(results))
