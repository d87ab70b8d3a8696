import {execFile} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {promisify} from 'node:util'

const run = promisify(execFile)

/** Files of one certificate: key and certificate, PEM. */
export interface KeyPair {
  cert: string
  key: string
}

export interface ClusterPki {
  dir: string
  ca: KeyPair
  apiserver: KeyPair
  admin: KeyPair
  controllerManager: KeyPair
  scheduler: KeyPair
  kubeProxy: KeyPair
  /** kwok serves the "kubelet" API of every fake node with this one. */
  kubelet: KeyPair
  /** Request-header authentication (aggregation), which controller-manager and scheduler look up. */
  frontProxyCa: KeyPair
  frontProxyClient: KeyPair
  serviceAccountKey: string
  serviceAccountPub: string
}

export interface PkiRequest {
  dir: string
  /** Extra IP SANs of the apiserver serving certificate (node IPs, the Service IP). */
  apiserverIps: string[]
}

// EC keys: an order of magnitude faster to make than RSA, and every component accepts them.
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args)
}

async function makeCa(dir: string, name: string, commonName: string): Promise<KeyPair> {
  const pair = {cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`)}
  await openssl([
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    pair.key,
    '-out',
    pair.cert,
    '-days',
    '3650',
    '-subj',
    `/CN=${commonName}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  ])
  return pair
}

/** A leaf certificate signed by the CA; `subject` like "/O=system:masters/CN=kubernetes-admin". */
async function makeLeaf(dir: string, name: string, ca: KeyPair, subject: string, usage: 'server' | 'client' | 'both', sans: string[] = []): Promise<KeyPair> {
  const pair = {cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`)}
  const csr = join(dir, `${name}.csr`)
  const extFile = join(dir, `${name}.ext`)
  const eku = {server: 'serverAuth', client: 'clientAuth', both: 'serverAuth,clientAuth'}[usage]
  const ext = ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${eku}`]
  if (sans.length > 0) ext.push(`subjectAltName=${sans.join(',')}`)
  await writeFile(extFile, ext.join('\n') + '\n')
  await openssl(['req', '-new', ...EC_KEY, '-keyout', pair.key, '-out', csr, '-subj', subject])
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-set_serial',
    `0x${randomBytes(12).toString('hex')}`,
    '-out',
    pair.cert,
    '-days',
    '825',
    '-extfile',
    extFile,
  ])
  return pair
}

/**
 * The certificates a kubeadm cluster has (minus etcd's own: the test cluster's etcd listens
 * on loopback without TLS), made with openssl so the API server's TLS and client-certificate
 * authentication are the real thing.
 */
export async function makeClusterPki(request: PkiRequest): Promise<ClusterPki> {
  const {dir} = request
  const [ca, frontProxyCa] = await Promise.all([makeCa(dir, 'ca', 'kubernetes'), makeCa(dir, 'front-proxy-ca', 'front-proxy-ca')])
  const apiserverSans = [
    'DNS:localhost',
    'DNS:kubernetes',
    'DNS:kubernetes.default',
    'DNS:kubernetes.default.svc',
    'DNS:kubernetes.default.svc.cluster.local',
    'IP:127.0.0.1',
    ...request.apiserverIps.map((ip) => `IP:${ip}`),
  ]
  // Leaves are independent of each other: make them side by side.
  const [apiserver, admin, controllerManager, scheduler, kubeProxy, kubelet, frontProxyClient] = await Promise.all([
    makeLeaf(dir, 'apiserver', ca, '/CN=kube-apiserver', 'server', apiserverSans),
    makeLeaf(dir, 'admin', ca, '/O=system:masters/CN=kubernetes-admin', 'client'),
    makeLeaf(dir, 'controller-manager', ca, '/CN=system:kube-controller-manager', 'client'),
    makeLeaf(dir, 'scheduler', ca, '/CN=system:kube-scheduler', 'client'),
    makeLeaf(dir, 'kube-proxy', ca, '/CN=system:kube-proxy', 'client'),
    makeLeaf(dir, 'kubelet', ca, '/CN=kwok-kubelet', 'both', ['DNS:localhost', 'IP:127.0.0.1']),
    makeLeaf(dir, 'front-proxy-client', frontProxyCa, '/CN=front-proxy-client', 'client'),
  ])
  const serviceAccountKey = join(dir, 'sa.key')
  const serviceAccountPub = join(dir, 'sa.pub')
  await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', serviceAccountKey])
  await openssl(['pkey', '-in', serviceAccountKey, '-pubout', '-out', serviceAccountPub])
  return {dir, ca, apiserver, admin, controllerManager, scheduler, kubeProxy, kubelet, frontProxyCa, frontProxyClient, serviceAccountKey, serviceAccountPub}
}

/** A kubeconfig with embedded paths to a client certificate. */
export function kubeconfigYaml(opts: {server: string; ca: string; client: KeyPair; user: string; tlsServerName?: string}): string {
  const cluster: Record<string, string> = {server: opts.server, 'certificate-authority': opts.ca}
  if (opts.tlsServerName) cluster['tls-server-name'] = opts.tlsServerName
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{name: 'selfhost-test', cluster}],
      users: [{name: opts.user, user: {'client-certificate': opts.client.cert, 'client-key': opts.client.key}}],
      contexts: [{name: `${opts.user}@selfhost-test`, context: {cluster: 'selfhost-test', user: opts.user}}],
      'current-context': `${opts.user}@selfhost-test`,
    },
    null,
    2,
  )
}
