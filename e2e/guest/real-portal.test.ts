// The guest agent against the real thing: the operator's controllers, the real portal agent API and
// download store (world.ts), the real API server, kwok playing KubeVirt, and packages downloaded by
// the downloader from an HTTP server on loopback. The agent runs in the Debian root filesystem
// (chrooted, its own namespaces), fetches its manifest and packages through the portal with its
// VM's token, installs them and reports: the session ends Ready with every package installed.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { testKubeconfigPath, useTestNamespace } from '../cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import type { Condition } from '../../operator/src/runtime/conditions.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { Secret } from '../../operator/src/vm/builders.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { type World, startWorld, uniqueName } from '../../operator/test/controllers/world.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { deb, tarGz } from './packages.ts';
import { GuestRoot, testRootfs } from './rootfs.ts';
import { lanMac } from '../../operator/src/vm/pool-network.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('guest');
let world: World;
let packages: TestServer;
let root: GuestRoot;
const files = new Map<string, Buffer>();

beforeAll(async () => {
  root = await GuestRoot.create(await testRootfs());
  files.set(
    '/pool/hello_1.0_all.deb',
    await deb('codebrowse-hello', '1.0', { 'usr/share/codebrowse-hello/hello.txt': 'hello from a deb\n' }),
  );
  files.set(
    '/releases/tool-2.0.tar.gz',
    tarGz([
      { name: 'tool-2.0/', type: 'dir' },
      {
        name: 'tool-2.0/configure',
        mode: 0o755,
        body: [
          '#!/bin/sh',
          "printf 'all:\\n\\tcp tool.txt tool.out\\ninstall:\\n\\tinstall -D -m 0644 tool.out /usr/local/share/tool/tool.txt\\n' > Makefile",
          '',
        ].join('\n'),
      },
      { name: 'tool-2.0/tool.txt', body: 'a tool\n' },
    ]),
  );
  packages = await new TestServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (body) res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    else res.writeHead(404).end();
  }).listen('127.0.0.1');
  world = await startWorld(admin);
}, 20 * 60_000);

afterAll(async () => {
  await world?.stop();
  await packages?.close();
  await root?.dispose();
});

describe('the guest agent with the real portal and store', () => {
  it('fetches its packages through the portal, installs them in order, and the session becomes Ready', async () => {
    await world.node(uniqueName('host'));
    const pool = uniqueName('pool');
    await world.pool(pool, { sessionsPerNode: 5, addresses: { cidr: '10.96.0.0/24', nodePrefix: 26 } } as Partial<
      ServerPool['spec']
    > &
      Pick<ServerPool['spec'], 'addresses'>);
    const urls = [packages.url('/pool/hello_1.0_all.deb'), packages.url('/releases/tool-2.0.tar.gz')];
    await world.session(ns.name, 'kim', { pool, user: 'kim', packages: urls.map((url) => ({ url })) });

    const withVm = await eventually(
      'a VM for the session',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'kim', ns.name);
        return s?.status?.vm ? s : undefined;
      },
      60_000,
    );
    const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
    const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
    const run = await root.runAgent({
      portal: world.portalUrl,
      token,
      timeoutMs: 180_000,
      lanMac: lanMac('codebrowse-vms', withVm.status!.vm!),
    });
    if (run.code !== 0) throw new Error(`the agent exited ${run.code}:\n${run.stdout}\n${run.stderr}`);

    const ready = await eventually(
      'Ready',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'kim', ns.name);
        return s?.status?.phase === 'Ready' ? s : undefined;
      },
      60_000,
    );
    const installed = (ready.status?.conditions as Condition[]).find((c) => c.type === 'Installed');
    expect(installed).toMatchObject({ status: 'True', reason: 'AllInstalled' });
    expect(ready.status?.packages?.map((p) => [p.url, p.installed, p.exitCode])).toEqual([
      [urls[0], true, 0],
      [urls[1], true, 0],
    ]);
    // What the user finds in the VM.
    expect(await readFile(join(root.dir, 'usr/share/codebrowse-hello/hello.txt'), 'utf8')).toBe('hello from a deb\n');
    expect(await readFile(join(root.dir, 'usr/local/share/tool/tool.txt'), 'utf8')).toBe('a tool\n');
    const passwd = await readFile(join(root.dir, 'etc/passwd'), 'utf8');
    expect(passwd).toMatch(/^kim:x:\d+:\d+:.*:\/home\/kim:/m);
  });
});
