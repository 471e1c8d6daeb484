// For `make dev` (and tests that want it): plays the guest agent of every claimed VM that kwok runs,
// since kwok VMs boot nothing. It does what the real agent does over the portal's agent API: wait
// for the claim, fetch the manifest, fetch each package through the portal and check its digest,
// report it, and say "all is well" (or not, when a package could not be fetched).
// Usage: node e2e/cluster/kwok-agent.ts KUBECONFIG PORTAL_URL [VM_NAMESPACE]
import { createHash } from 'node:crypto';
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
const done = new Set<string>(); // uids of VMs whose agent has said it is done (a VM serves one session)

async function playOnce(): Promise<void> {
  const { items } = await client.list<VirtualMachine>(Resources.VirtualMachine, namespace);
  for (const vm of items) {
    // Like the real agent: it knows only its VM's token (the NoCloud disk, here the Secret it is
    // made from) and asks the portal; 204 means nobody has claimed the VM yet.
    const running = (vm.status as { printableStatus?: string } | undefined)?.printableStatus === 'Running';
    if (!running || done.has(vm.metadata.uid!)) continue;
    const secret = await client.get<Secret>(Resources.Secret, `${vm.metadata.name}-agent`, namespace);
    const token = secret?.data?.token ? Buffer.from(secret.data.token, 'base64').toString('utf8') : undefined;
    if (!token) continue;
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const res = await fetch(`${portal}/agent/v1/manifest`, { headers });
    if (res.status !== 200) continue;
    const manifest = (await res.json()) as {
      session?: string;
      packages: { index: number; url: string; digest?: string; download: string }[];
    };
    const session = manifest.session ?? 'a session';
    let allWell = true;
    for (const pkg of manifest.packages) {
      // Fetched through the portal and checked like the real agent does; nothing is installed.
      const content = await fetch(`${portal}${pkg.download}`, { headers });
      const bytes = content.status === 200 ? Buffer.from(await content.arrayBuffer()) : undefined;
      const digest = bytes && `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const ok = digest !== undefined && digest === pkg.digest;
      allWell &&= ok;
      await fetch(`${portal}/agent/v1/report`, {
        method: 'POST',
        headers,
        body: JSON.stringify({
          package: pkg.index,
          installed: ok,
          exitCode: ok ? 0 : 1,
          message: ok
            ? `downloaded ${bytes!.length} bytes, digest checked (kwok agent installs nothing)`
            : `download through the portal failed: HTTP ${content.status}${digest ? `, digest ${digest}` : ''}`,
        }),
      });
    }
    const finished = await fetch(`${portal}/agent/v1/done`, {
      method: 'POST',
      headers,
      body: JSON.stringify(
        allWell
          ? { installed: true, message: 'all is well (played by kwok-agent)' }
          : { installed: false, message: 'a package could not be fetched through the portal' },
      ),
    });
    if (finished.status === 204) {
      done.add(vm.metadata.uid!);
      console.log(`${new Date().toISOString()} played the agent of ${vm.metadata.name} for ${session}`);
    }
  }
}

for (;;) {
  await playOnce().catch((error: unknown) => console.error(String(error)));
  await sleep(1000);
}
