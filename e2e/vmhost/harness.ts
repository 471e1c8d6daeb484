// What the VM host's own test and its benchmark share: a control plane whose kwok plays only the
// node, a stand-in agent API that notes when each VM's agent polls, bare VMs that talk to it, and
// the VM host as a child process.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeClient } from '../../operator/src/runtime/client.ts';
import { KubeAccess } from '../../operator/src/runtime/kubeconfig.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { VirtualMachine } from '../../operator/src/vm/builders.ts';
import { resolveBinaries } from '../cluster/binaries.ts';
import { ControlPlane, KWOK_NODE_ANNOTATION } from '../cluster/control-plane.ts';
import { crdFiles, installCrds, REPO_ROOT } from '../cluster/install.ts';

export const VM_NAMESPACE = 'codebrowse-vms';

/** The Linux image's directory (built once, cached: vm-images/linux/image.sh). */
export function linuxImage(): string {
  return execFileSync('sh', [join(REPO_ROOT, 'vm-images', 'linux', 'image.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export interface PollingPortal {
  url: string;
  /** When each token polled the manifest, in order. */
  polls: Map<string, number[]>;
  close(): void;
}

/** The agent API stand-in: 204 (unclaimed) to every poll, noting when each token polled. */
export async function pollingPortal(): Promise<PollingPortal> {
  const polls = new Map<string, number[]>();
  const server = createServer((req, res) => {
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if (token && req.url === '/agent/v1/manifest') polls.set(token, [...(polls.get(token) ?? []), Date.now()]);
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    polls,
    close: () => server.close(),
  };
}

/** A control plane with the CRDs, kwok playing only `node` (not the VMs), and the VM namespace. */
export async function vmHostCluster(
  node: string,
  userAgent: string,
): Promise<{ plane: ControlPlane; client: KubeClient }> {
  const plane = await ControlPlane.start({ binDir: await resolveBinaries() });
  const kc = new KubeConfig();
  kc.loadFromFile(plane.kubeconfig);
  await installCrds(kc, await crdFiles());
  await plane.startKwok({ vms: false });
  const client = new KubeClient(KubeAccess.load(plane.kubeconfig), userAgent);
  await client.create(Resources.Namespace, { metadata: { name: VM_NAMESPACE } });
  await client.create(Resources.Node, { metadata: { name: node, annotations: { [KWOK_NODE_ANNOTATION]: 'fake' } } });
  return { plane, client };
}

/** A VM on `node` (1 vCPU, 1 GiB) whose agent polls `portalUrl` with its name as the token. */
export function bareVm(name: string, node: string, portalUrl: string, paused = false): VirtualMachine {
  return {
    apiVersion: 'kubevirt.io/v1',
    kind: 'VirtualMachine',
    metadata: { name, namespace: VM_NAMESPACE, annotations: paused ? { 'codebrowse.io/paused': 'true' } : {} },
    spec: {
      runStrategy: 'Always',
      template: {
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': node },
          domain: { cpu: { cores: 1 }, resources: { requests: { memory: '1Gi' } }, devices: {} },
          volumes: [
            {
              name: 'agent',
              cloudInitNoCloud: { userData: `CODEBROWSE_PORTAL=${portalUrl}\nCODEBROWSE_TOKEN=${name}\n` },
            },
          ],
        },
      },
    },
  } as VirtualMachine;
}

/** The VM host (e2e/vmhost/vmhost.ts) as a child process; its output goes to `log` when given. */
export function spawnVmHost(options: {
  kubeconfig: string;
  node: string;
  image: string;
  dir: string;
  netns: string;
  memorySnapshot?: boolean;
  log?: string;
}): ChildProcess {
  const out = options.log ? openSync(options.log, 'a') : 'ignore';
  const child = spawn(
    process.execPath,
    [
      join(REPO_ROOT, 'e2e', 'vmhost', 'vmhost.ts'),
      `--kubeconfig=${options.kubeconfig}`,
      `--node=${options.node}`,
      `--image=${options.image}`,
      `--dir=${options.dir}`,
      `--netns=${options.netns}`,
      ...(options.memorySnapshot ? ['--memory-snapshot'] : []),
    ],
    { stdio: ['ignore', out, out] },
  );
  if (typeof out === 'number') closeSync(out);
  return child;
}

/** SIGTERM (the host stops its QEMUs first), SIGKILL after 30 s. */
export async function stopVmHost(child: ChildProcess): Promise<void> {
  child.kill('SIGTERM');
  for (let i = 0; i < 300 && child.exitCode === null && child.signalCode === null; i++) await sleep(100);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}
