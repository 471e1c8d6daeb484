// Keys and certificates for a throw-away control plane, made with the openssl command line
// (Node's crypto makes keys but not X.509 certificates).
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Pki {
  caCert: string;
  serverCert: string;
  serverKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
  /**
   * The aggregation layer's request-header CA and the client certificate kube-apiserver presents
   * to extension API servers (KubeVirt's virt-api) as it proxies to them, as kubeadm makes them.
   */
  frontProxyCaCert: string;
  frontProxyClientCert: string;
  frontProxyClientKey: string;
}

/** The common name of the front-proxy client certificate (what extension servers allow). */
export const FRONT_PROXY_CLIENT = 'front-proxy-client';

/**
 * A CA, a serving certificate for 127.0.0.1/localhost signed by it, a service-account key pair,
 * and the front-proxy CA with its client certificate.
 */
export async function createPki(dir: string): Promise<Pki> {
  const pki: Pki = {
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'apiserver.crt'),
    serverKey: join(dir, 'apiserver.key'),
    serviceAccountKey: join(dir, 'sa.key'),
    serviceAccountPub: join(dir, 'sa.pub'),
    frontProxyCaCert: join(dir, 'front-proxy-ca.crt'),
    frontProxyClientCert: join(dir, 'front-proxy-client.crt'),
    frontProxyClientKey: join(dir, 'front-proxy-client.key'),
  };
  const caKey = join(dir, 'ca.key');
  const csr = join(dir, 'apiserver.csr');
  const ext = join(dir, 'apiserver.ext');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    caKey,
    '-out',
    pki.caCert,
    '-days',
    '30',
    '-subj',
    '/CN=codebrowse-test-ca',
  ]);
  await run('openssl', ['req', ...ec, '-keyout', pki.serverKey, '-out', csr, '-subj', '/CN=kube-apiserver']);
  await writeFile(
    ext,
    'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n',
  );
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    pki.caCert,
    '-CAkey',
    caKey,
    '-CAcreateserial',
    '-out',
    pki.serverCert,
    '-days',
    '30',
    '-extfile',
    ext,
  ]);
  await run('openssl', [
    'genpkey',
    '-algorithm',
    'RSA',
    '-pkeyopt',
    'rsa_keygen_bits:2048',
    '-out',
    pki.serviceAccountKey,
  ]);
  await run('openssl', ['pkey', '-in', pki.serviceAccountKey, '-pubout', '-out', pki.serviceAccountPub]);
  const frontProxyCaKey = join(dir, 'front-proxy-ca.key');
  const frontProxyCsr = join(dir, 'front-proxy-client.csr');
  const frontProxyExt = join(dir, 'front-proxy-client.ext');
  await run('openssl', [
    ...['req', '-x509', ...ec, '-keyout', frontProxyCaKey, '-out', pki.frontProxyCaCert],
    ...['-days', '30', '-subj', '/CN=codebrowse-test-front-proxy-ca'],
  ]);
  await run('openssl', [
    ...['req', ...ec, '-keyout', pki.frontProxyClientKey, '-out', frontProxyCsr],
    ...['-subj', `/CN=${FRONT_PROXY_CLIENT}`],
  ]);
  await writeFile(frontProxyExt, 'extendedKeyUsage=clientAuth\n');
  await run('openssl', [
    ...['x509', '-req', '-in', frontProxyCsr, '-CA', pki.frontProxyCaCert, '-CAkey', frontProxyCaKey],
    ...['-CAcreateserial', '-out', pki.frontProxyClientCert, '-days', '30', '-extfile', frontProxyExt],
  ]);
  return pki;
}

export function newToken(): string {
  return randomBytes(24).toString('hex');
}
