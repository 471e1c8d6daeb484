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
}

/** A CA, a serving certificate for 127.0.0.1/localhost signed by it, and a service-account key pair. */
export async function createPki(dir: string): Promise<Pki> {
  const pki: Pki = {
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'apiserver.crt'),
    serverKey: join(dir, 'apiserver.key'),
    serviceAccountKey: join(dir, 'sa.key'),
    serviceAccountPub: join(dir, 'sa.pub'),
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
  return pki;
}

export function newToken(): string {
  return randomBytes(24).toString('hex');
}
