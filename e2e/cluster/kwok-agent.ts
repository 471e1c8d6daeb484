// For `make dev` (and tests that want it): plays the guest agent of every claimed VM that kwok runs,
// since kwok VMs boot nothing. It does what the real agent does over the portal's agent API: wait
// for the claim, fetch the manifest, report each package installed, say "all is well".
// Usage: node e2e/cluster/kwok-agent.ts KUBECONFIG PORTAL_URL [VM_NAMESPACE]
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';

const [kubeconfig, portal, namespace = 'codebrowse-vms'] = process.argv.slice(2);
if (!kubeconfig || !portal) {
  console.error('usage: node e2e/cluster/kwok-agent.ts KUBECONFIG PORTAL_URL [VM_NAMESPACE]');
  process.exit(2);
}
const kc = new KubeConfig();
kc.loadFromFile(kubeconfig);
const client = new KubeClient(kc, 'codebrowse-kwok-agent');
const done = new Set<string>(); // vm uid + session: reported already

async function playOnce(): Promise<void> {
  const { items } = await client.list<VirtualMachine>(Resources.VirtualMachine, namespace);
  for (const vm of items) {
    const session = vm.metadata.annotations?.['codebrowse.io/session-ref'];
    const running = (vm.status as { printableStatus?: string } | undefined)?.printableStatus === 'Running';
    const key = `${vm.metadata.uid}/${session}`;
    if (!session || !running || done.has(key)) continue;
    const secret = await client.get<Secret>(Resources.Secret, `${vm.metadata.name}-agent`, namespace);
    const token = secret?.data?.token ? Buffer.from(secret.data.token, 'base64').toString('utf8') : undefined;
    if (!token) continue;
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const res = await fetch(`${portal}/agent/v1/manifest`, { headers });
    if (res.status !== 200) continue;
    const manifest = (await res.json()) as { packages: { index: number; url: string }[] };
    for (const pkg of manifest.packages)
      await fetch(`${portal}/agent/v1/report`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ package: pkg.index, installed: true, exitCode: 0, message: 'installed (kwok agent)' }),
      });
    const finished = await fetch(`${portal}/agent/v1/done`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ installed: true, message: 'all is well (played by kwok-agent)' }),
    });
    if (finished.status === 204) {
      done.add(key);
      console.log(`${new Date().toISOString()} played the agent of ${vm.metadata.name} for ${session}`);
    }
  }
}

for (;;) {
  await playOnce().catch((error: unknown) => console.error(String(error)));
  await sleep(1000);
}
