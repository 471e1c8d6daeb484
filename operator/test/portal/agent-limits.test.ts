// A hostile VM against the portal's agent API (issue 21, part 6): bodies refused by the session's
// mode and their announced size before a byte is read, ten parallel oversize uploads while the
// portal goes on serving pages, a request loop meeting 429 with Retry-After, repeated reports
// costing no status write, and a run's output capped in UTF-8 bytes (what a ConfigMap counts).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { BrowseSession, ServerPool } from '../../src/api/objects.ts';
import { pageLinkOf } from '../../src/browse/link.ts';
import { AGENT_LIMITS, AgentApi, RUN_OUTPUT_LIMIT } from '../../src/portal/agent-api.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import { Resources } from '../../src/runtime/resources.ts';
import type { Secret, VirtualMachine } from '../../src/vm/builders.ts';
import { clientFor, eventually, testLogger } from '../runtime/harness.ts';
import { type World, startWorld, uniqueName } from '../controllers/world.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('agentlimits');
const VMS = 'codebrowse-vms';
let world: World;
let pool: string;

beforeAll(async () => {
  world = await startWorld(admin);
  await world.node(uniqueName('host'));
  pool = uniqueName('pool');
  await world.pool(pool, { sessionsPerNode: 4, addresses: { cidr: '10.96.6.0/24', nodePrefix: 26 } });
  await eventually(
    'pool ready',
    async () => (await admin.get<ServerPool>(Resources.ServerPool, pool))?.status?.totals?.nodes === 1,
  );
}, 120_000);
afterAll(async () => {
  await world.stop();
});

/** The session's VM's agent token, once it has a VM. */
async function agentToken(name: string): Promise<{ session: BrowseSession; token: string }> {
  const session = await eventually(
    `${name} has a VM`,
    async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, name, ns.name);
      return s?.status?.vm && s.status.url ? s : undefined;
    },
    60_000,
  );
  const secret = await admin.get<Secret>(Resources.Secret, `${session.status!.vm}-agent`, VMS);
  return { session, token: Buffer.from(secret!.data!.token!, 'base64').toString('utf8') };
}

/**
 * A POST that announces `length` bytes but sends only `sent` of them: `status` resolves as soon as
 * the portal answers (it must answer without the rest), or with 0 when it closes without one.
 */
function partialPost(path: string, token: string, length: number, sent = 1024): Promise<number> {
  return partialUpload(path, token, length, sent).status;
}

function partialUpload(
  path: string,
  token: string,
  length: number,
  sent = 1024,
): { status: Promise<number>; abort: () => void } {
  const { hostname, port } = new URL(world.portalUrl);
  let req: ReturnType<typeof request> | undefined;
  const status = new Promise<number>((resolve) => {
    req = request({
      host: hostname,
      port,
      path,
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': length },
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      req!.destroy();
    });
    req.on('error', () => resolve(0));
    req.write(`{"output":"${'x'.repeat(Math.max(0, sent - 12))}`);
    // Never finished: the portal must not wait for it.
  });
  return { status, abort: () => req?.destroy() };
}

function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)),
  ]);
}

describe("the agent API against a hostile VM's agent", () => {
  it('refuses bodies by mode and announced size before reading them, and keeps serving pages through ten parallel uploads', async () => {
    await world.session(ns.name, 'ann', { pool, user: 'ann' });
    await world.session(ns.name, 'rue', { pool, user: 'rue', mode: 'Run', run: { script: 'true' } });
    const ann = await agentToken('ann');
    const rue = await agentToken('rue');

    // A Browse session's VM sending a "result" of 6 MB: refused by the mode, the body unread.
    expect(await within(5000, 'a result from a Browse VM', partialPost('/agent/v1/result', ann.token, 6_000_000))).toBe(
      409,
    );
    // A report announcing 10 MB: refused by size before reading.
    expect(await within(5000, 'a 10 MB report', partialPost('/agent/v1/report', ann.token, 10_000_000))).toBe(413);

    // Ten uploads at once from the test run's VM, each announcing 5 MB and sending slowly: at most
    // two are read at a time across the portal, the rest get 429 at once.
    const started = Array.from({ length: 10 }, () => partialUpload('/agent/v1/result', rue.token, 5_000_000));
    const uploads = started.map((u) => u.status);
    const settled = await Promise.race([
      Promise.allSettled(uploads),
      new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), 3000)),
    ]);
    expect(settled).toBe('pending'); // the two being read wait for their bodies
    const statuses = await Promise.all(
      uploads.map((u) => Promise.race([u, new Promise<number>((resolve) => setTimeout(() => resolve(-1), 100))])),
    );
    expect(statuses.filter((s) => s === 429)).toHaveLength(8);
    expect(statuses.filter((s) => s === -1)).toHaveLength(2); // still reading
    // Meanwhile the pages and the agent API go on.
    const page = await fetch(`${world.portalUrl}${new URL(await pageLinkOf(admin, ann.session)).pathname}`);
    expect(page.status).toBe(200);
    expect((await fetch(`${world.portalUrl}/healthz`)).status).toBe(200);
    const manifest = await fetch(`${world.portalUrl}/agent/v1/manifest`, {
      headers: { authorization: `Bearer ${ann.token}` },
    });
    expect(manifest.status).toBe(200);
    // The two uploads give up; their slots are free again.
    for (const upload of started) upload.abort();
    await eventually(
      'a result slot free again (an upload is read, not refused)',
      async () => {
        const probe = partialUpload('/agent/v1/result', rue.token, 5_000_000);
        const answer = await Promise.race([
          probe.status,
          new Promise<'reading'>((r) => setTimeout(() => r('reading'), 1000)),
        ]);
        probe.abort();
        return answer === 'reading';
      },
      10_000,
      200,
    );
  }, 180_000);

  it('a loop of requests meets 429 with Retry-After; the same report again writes nothing', async () => {
    await world.session(ns.name, 'lou', { pool, user: 'lou' });
    const lou = await agentToken('lou');
    const headers = { authorization: `Bearer ${lou.token}`, 'content-type': 'application/json' };
    // An agent API of its own (the portal's caches, the real API server) whose status writes are
    // counted: the operator writes the same session meanwhile, so its resourceVersion cannot tell.
    // A conflict makes the API retry against the newer session, so count what the server accepted.
    const writes: string[] = [];
    const counting = new Proxy(world.client, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver) as unknown;
        if (property === 'mergePatch' && typeof value === 'function')
          // Only a write the API server took counts: a 409 (the operator wrote first) is retried.
          return async (...args: unknown[]) => {
            const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
            writes.push(String(args[1]));
            return result;
          };
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const api = new AgentApi({
      client: counting,
      secrets: world.manager.informer<Secret>(Resources.Secret, { labelSelector: 'codebrowse.io/vm', namespace: VMS }),
      vms: world.manager.informer<VirtualMachine>(Resources.VirtualMachine, { namespace: VMS }),
      log: testLogger(),
    });
    const server = createServer((req, res) => void api.handle(req, res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const own = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const report = () =>
      fetch(`${own}/agent/v1/report`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ package: 0, installed: true, exitCode: 0, message: 'done' }),
      });
    const first = await report();
    expect(first.status).toBe(204);
    expect(writes).toEqual(['lou']);
    const written = (await admin.get<BrowseSession>(Resources.BrowseSession, 'lou', ns.name))!;
    expect(written.status?.packages?.[0]).toMatchObject({ installed: true, exitCode: 0, message: 'done' });
    const answers: Response[] = [];
    const started = Date.now();
    for (let i = 0; i < 100; i++) answers.push(await report());
    const seconds = (Date.now() - started) / 1000;
    const limited = answers.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    expect(Number(limited[0]!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // What the write bucket allows (AGENT_LIMITS.write: a burst, then a rate), and no more.
    const { burst, perSecond } = AGENT_LIMITS.write;
    expect(answers.filter((r) => r.status === 204).length).toBeLessThanOrEqual(burst + Math.ceil(perSecond * seconds));
    // None of the accepted repeats wrote the session again.
    expect(writes).toEqual(['lou']);
    server.close();
  }, 120_000);

  it("caps a run's output in UTF-8 bytes: three-byte characters past the limit still fit a ConfigMap", async () => {
    await world.session(ns.name, 'eve', { pool, user: 'eve', mode: 'Run', run: { script: 'true' } });
    const eve = await agentToken('eve');
    const output = `FIRST\n${'€'.repeat(600_000)}\nLAST`; // 600 000 UTF-16 units, 1.8 MB of UTF-8
    const res = await fetch(`${world.portalUrl}/agent/v1/result`, {
      method: 'POST',
      headers: { authorization: `Bearer ${eve.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ exitCode: 0, durationSeconds: 1, output }),
    });
    expect(res.status).toBe(204);
    const done = await eventually('the result recorded', async () => {
      const s = await admin.get<BrowseSession>(Resources.BrowseSession, 'eve', ns.name);
      return s?.status?.run?.outputConfigMap ? s : undefined;
    });
    const kept = await admin.get<KubeObject & { data: { output: string } }>(
      Resources.ConfigMap,
      done.status!.run!.outputConfigMap!,
      VMS,
    );
    const bytes = Buffer.byteLength(kept!.data.output);
    expect(bytes).toBeLessThanOrEqual(RUN_OUTPUT_LIMIT);
    expect(bytes).toBeGreaterThan(RUN_OUTPUT_LIMIT - 16);
    expect(kept!.data.output.startsWith('FIRST\n€')).toBe(true);
    expect(kept!.data.output.endsWith('€\nLAST')).toBe(true);
    expect(kept!.data.output).toMatch(/\[\.\.\. \d+ bytes left out \.\.\.\]/);
    expect(kept!.data.output).not.toContain('\uFFFD'); // cut at character boundaries
  }, 120_000);
});

describe("a warm VM's agent waiting for its claim (the manifest's long poll)", () => {
  it('holds the poll while the VM is paused, past its wait, and answers the manifest as soon as a session claims it', async () => {
    await world.node(uniqueName('host'));
    const warmPool = uniqueName('pool');
    await world.pool(warmPool, {
      sessionsPerNode: 2,
      addresses: { cidr: '10.96.7.0/24', nodePrefix: 26 },
      images: [{ name: 'debian-12', os: 'linux', snapshot: 'debian-12-golden', warm: 1 }],
    } as Partial<ServerPool['spec']>);
    const warm = await eventually(
      'a paused warm VM',
      async () =>
        (await admin.list<VirtualMachine>(Resources.VirtualMachine, VMS)).items.find(
          (vm) => vm.metadata.labels?.['codebrowse.io/pool'] === warmPool && vm.status?.printableStatus === 'Paused',
        ),
      90_000,
    );
    const secret = await admin.get<Secret>(Resources.Secret, `${warm.metadata.name}-agent`, VMS);
    const token = Buffer.from(secret!.data!.token!, 'base64').toString('utf8');
    const headers = { authorization: `Bearer ${token}` };

    const polled = Date.now();
    const poll = fetch(`${world.portalUrl}/agent/v1/manifest?wait=1`, { headers });
    // Paused: no 204 at the end of its second (the guest would not hear it until TCP's retry).
    const early = await Promise.race([poll, new Promise<'pending'>((r) => setTimeout(() => r('pending'), 3000))]);
    expect(early).toBe('pending');
    await world.session(ns.name, 'wes', { pool: warmPool, user: 'wes' });
    const answer = await within(30_000, 'the claimed manifest', poll);
    expect(answer.status).toBe(200);
    expect(((await answer.json()) as { session: string }).session).toBe(`${ns.name}/wes`);
    console.log(`claim answered ${Date.now() - polled} ms after the poll began`);
    // The claim is written on the VM first, then in the session's status.
    await eventually(
      'wes has the warm VM',
      async () =>
        (await admin.get<BrowseSession>(Resources.BrowseSession, 'wes', ns.name))?.status?.vm === warm.metadata.name,
    );

    // Claimed already: the same poll answers at once; a bad wait is no wait.
    for (const wait of ['30', 'x', '-1', '1e9']) {
      const again = await within(
        5000,
        `wait=${wait}`,
        fetch(`${world.portalUrl}/agent/v1/manifest?wait=${wait}`, { headers }),
      );
      expect(again.status).toBe(200);
    }
  }, 180_000);
});
