// Test runs (spec.mode Run) against the real thing: the operator's controllers, the real portal and
// download store (world.ts), the real API server, kwok playing KubeVirt, a real SMTP server, and the
// real guest agent in the Debian root filesystem. A passing and a failing script each end
// Completed (what `kubectl wait --for=condition=Completed` waits for) with their exit status and
// output tail in status, the whole output on the session page and the result in a mail; nothing
// of the run is left but the session object, its page and its output, which go with it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { testKubeconfigPath, useTestNamespace } from '../cluster/test-env.ts';
import type { BrowseSession, DownloadRequest, ServerPool } from '../../operator/src/api/objects.ts';
import { Mailer } from '../../operator/src/notify/mailer.ts';
import type { Condition } from '../../operator/src/runtime/conditions.ts';
import { pageLinkOf } from '../../operator/src/browse/link.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import type { DNSEndpoint, Secret, VirtualMachine } from '../../operator/src/vm/builders.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { TestSmtpServer } from '../../operator/test/notify/smtp.ts';
import { type World, startWorld, uniqueName } from '../../operator/test/controllers/world.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { tarGz } from './packages.ts';
import { GuestRoot, testRootfs } from './rootfs.ts';
import { lanMac } from '../../operator/src/vm/pool-network.ts';

const run = promisify(execFile);
const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('run');
let world: World;
let packages: TestServer;
let root: GuestRoot;
let smtp: TestSmtpServer;
let mailer: Mailer;
let pool: string;
const files = new Map<string, Buffer>();

// A package the script uses: a tarball with a configure script, installed by the suffix rules.
const TOOL = '/releases/checker-1.0.tar.gz';

beforeAll(async () => {
  root = await GuestRoot.create(await testRootfs());
  files.set(
    TOOL,
    tarGz([
      { name: 'checker-1.0/', type: 'dir' },
      {
        name: 'checker-1.0/configure',
        mode: 0o755,
        body: [
          '#!/bin/sh',
          "printf 'all:\\n\\ttrue\\ninstall:\\n\\tinstall -D -m 0755 checker /usr/local/bin/checker\\n' > Makefile",
          '',
        ].join('\n'),
      },
      { name: 'checker-1.0/checker', mode: 0o755, body: '#!/bin/sh\necho "checker 1.0 checks $1"\n' },
    ]),
  );
  packages = await new TestServer((req, res) => {
    const body = files.get(req.url ?? '');
    if (body) res.writeHead(200, { 'content-length': String(body.length) }).end(body);
    else res.writeHead(404).end();
  }).listen('127.0.0.1');
  smtp = await new TestSmtpServer().listen();
  mailer = new Mailer({
    host: '127.0.0.1',
    port: smtp.port,
    secure: false,
    startTls: 'never',
    from: 'codebrowse@example.org',
  });
  world = await startWorld(admin, { mailer });
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, { sessionsPerNode: 5, addresses: { cidr: '10.95.0.0/24', nodePrefix: 26 } } as Partial<
    ServerPool['spec']
  > &
    Pick<ServerPool['spec'], 'addresses'>);
}, 20 * 60_000);

afterAll(async () => {
  await world?.stop();
  mailer?.close();
  await smtp?.close();
  await packages?.close();
  await root?.dispose();
});

function condition(session: BrowseSession | undefined, type: string): Condition | undefined {
  return (session?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
}

/** Applies a Run session, waits for its VM, and runs the real agent for it; returns the agent's output. */
async function runSession(name: string, script: string): Promise<string> {
  await world.session(ns.name, name, {
    pool,
    user: name,
    mode: 'Run',
    run: { script, timeout: '5m' },
    packages: [{ url: packages.url(TOOL) }],
  });
  const withVm = await eventually(
    `a VM for ${name}`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.vm && s.status.phase === 'Installing' ? s : undefined;
    },
    60_000,
  );
  const secret = await admin.get<Secret>(Resources.Secret, `${withVm.status!.vm}-agent`, 'codebrowse-vms');
  const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
  const agent = await root.runAgent({
    portal: world.portalUrl,
    token,
    timeoutMs: 180_000,
    lanMac: lanMac('codebrowse-vms', withVm.status!.vm!),
  });
  if (agent.code !== 0) throw new Error(`the agent exited ${agent.code}:\n${agent.stdout}\n${agent.stderr}`);
  return agent.stdout;
}

/** `kubectl wait --for=condition=Completed`, as a CI pipeline would run it. */
async function kubectlWait(name: string): Promise<string> {
  const kubectl = join(process.env.CODEBROWSE_BIN_DIR!, 'kubectl');
  const { stdout } = await run(kubectl, [
    '--kubeconfig',
    testKubeconfigPath(),
    '-n',
    ns.name,
    'wait',
    '--for=condition=Completed',
    `browsesession/${name}`,
    '--timeout=60s',
  ]);
  return stdout;
}

/** What a finished run leaves: no VM, no agent Secret, no address, no DNS record, no DownloadRequest. */
async function expectNothingHeld(session: BrowseSession): Promise<void> {
  await eventually(
    `${session.metadata.name} holds nothing`,
    async () => {
      const vms = (await admin.list<VirtualMachine>(Resources.VirtualMachine, 'codebrowse-vms')).items.filter(
        (vm) => vm.metadata.annotations?.['codebrowse.io/session-ref'] === `${ns.name}/${session.metadata.name}`,
      );
      const agentSecrets = (await admin.list<Secret>(Resources.Secret, 'codebrowse-vms')).items.filter((s) =>
        vms.some((vm) => s.metadata.name === `${vm.metadata.name}-agent`),
      );
      const requests = (await admin.list<DownloadRequest>(Resources.DownloadRequest, ns.name)).items;
      const records = (await admin.list<DNSEndpoint>(Resources.DNSEndpoint, ns.name)).items;
      const now = await admin.get<BrowseSession>(Resources.BrowseSession, session.metadata.name!, ns.name);
      return vms.length === 0 &&
        agentSecrets.length === 0 &&
        requests.length === 0 &&
        records.length === 0 &&
        !now?.status?.ip &&
        !now?.status?.vm &&
        !now?.status?.node
        ? true
        : undefined;
    },
    30_000,
  );
  // The pool's status is written at most once a second: its count follows.
  await eventually(
    'the pool counts no session',
    async () => ((await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.used ?? 0) === 0,
    10_000,
  );
}

describe('test runs (spec.mode Run)', () => {
  it('a passing and a failing script end Completed with exit status, output tail, page, mail, and nothing left', async () => {
    // The passing script prints more than the 4 KiB tail: its first line is only on the page.
    const passing = [
      'echo "FIRST LINE of the passing run"',
      'i=0; while [ $i -lt 400 ]; do echo "line $i of the run output"; i=$((i+1)); done',
      'checker "$CODEBROWSE_RUN_DIR"',
      'test "$(pwd)" = "$CODEBROWSE_RUN_DIR"',
      'echo "all tests passed"',
    ].join('\n');
    const failing = ['echo "running the failing test"', 'echo "assertion failed: 2 + 2 = 5" >&2', 'exit 3'].join('\n');

    const passAgent = await runSession('pat', passing);
    expect(passAgent).toMatch(/the test script exited 0/);
    const failAgent = await runSession('fay', failing);
    expect(failAgent).toMatch(/the test script exited 3/);

    // What a CI pipeline waits for.
    expect(await kubectlWait('pat')).toMatch(/condition met/);
    expect(await kubectlWait('fay')).toMatch(/condition met/);

    const pat = await eventually(
      'pat mailed and released',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'pat', ns.name);
        return s?.status?.phase === 'Completed' && condition(s, 'Notified')?.reason === 'ResultMailSent'
          ? s
          : undefined;
      },
      30_000,
    );
    expect(condition(pat, 'Completed')).toMatchObject({ status: 'True', reason: 'Succeeded' });
    expect(pat.status?.run).toMatchObject({ exitCode: 0, result: 'Succeeded' });
    expect(pat.status?.run?.durationSeconds).toBeGreaterThan(0);
    expect(pat.status?.run?.outputTail).toMatch(/checker 1\.0 checks \/home\/pat\/test-run\nall tests passed\n$/);
    expect(pat.status?.run?.outputTail).not.toContain('FIRST LINE');
    expect(pat.status?.run?.outputBytes).toBeGreaterThan(4096);
    expect(pat.status?.packages?.[0]).toMatchObject({ installed: true, exitCode: 0 });

    const fay = await eventually(
      'fay mailed and released',
      async () => {
        const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'fay', ns.name);
        return s?.status?.phase === 'Completed' && condition(s, 'Notified')?.reason === 'ResultMailSent'
          ? s
          : undefined;
      },
      30_000,
    );
    expect(condition(fay, 'Completed')).toMatchObject({ status: 'True', reason: 'ScriptFailed' });
    expect(condition(fay, 'Completed')?.message).toMatch(/exited 3/);
    expect(fay.status?.run).toMatchObject({ exitCode: 3, result: 'ScriptFailed' });
    expect(fay.status?.run?.outputTail).toBe('running the failing test\nassertion failed: 2 + 2 = 5\n');
    // A failing test is a result, not a failure of the platform.
    expect(condition(fay, 'Failed')).toBeUndefined();

    // No login was made: no password, no ssh.
    const shadow = await readFile(join(root.dir, 'etc/shadow'), 'utf8');
    expect(shadow).toMatch(/^pat:[!*]/m);

    // Nothing held.
    await expectNothingHeld(pat);
    await expectNothingHeld(fay);

    // The page (its link, as kubectl browse link reads it) shows the whole output, the first line too.
    const pagePath = new URL(await pageLinkOf(admin, pat)).pathname;
    const page = await fetch(`${world.portalUrl}${pagePath}`);
    expect(page.status).toBe(200);
    const html = await page.text();
    expect(html).toContain('FIRST LINE of the passing run');
    expect(html).toContain('line 399 of the run output');
    expect(html).toMatch(/data-field="run-result">Succeeded</);
    expect(html).toMatch(/data-field="run-exit-code">0</);

    // The mails: one each, with the result and the output's last lines.
    const mailTo = (who: string) => smtp.received.filter((m) => m.envelopeTo.includes(`${who}@example.org`));
    expect(mailTo('pat')).toHaveLength(1);
    expect(mailTo('pat')[0]!.parsed.subject).toBe('Test run pat passed');
    expect(mailTo('pat')[0]!.parsed.text).toContain('all tests passed');
    expect(mailTo('fay')).toHaveLength(1);
    expect(mailTo('fay')[0]!.parsed.subject).toBe('Test run fay failed (exit status 3)');
    expect(mailTo('fay')[0]!.parsed.text).toContain('assertion failed: 2 + 2 = 5');

    // Deleting the session takes its page and its output with it.
    // The whole output is kept in the VM namespace (the session's namespace's other users never read it).
    const outputName = pat.status!.run!.outputConfigMap!;
    expect(await admin.get(Resources.ConfigMap, outputName, ns.name)).toBeUndefined();
    expect(await admin.get(Resources.ConfigMap, outputName, 'codebrowse-vms')).toBeDefined();
    await admin.delete(Resources.BrowseSession, 'pat', ns.name);
    await eventually(
      'pat gone with its output and login',
      async () =>
        !(await admin.get(Resources.BrowseSession, 'pat', ns.name)) &&
        !(await admin.get(Resources.ConfigMap, outputName, 'codebrowse-vms')) &&
        !(await admin.get(Resources.Secret, `login-${pat.metadata.uid}`, 'codebrowse-vms'))
          ? true
          : undefined,
      30_000,
    );
    expect((await fetch(`${world.portalUrl}${pagePath}`)).status).toBe(404);
  }, 600_000);
});
