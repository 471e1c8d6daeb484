// Leader election between real operator processes: only the Lease holder reconciles; a leader
// killed with SIGKILL is replaced within lease duration + renew deadline; a leader stopped with
// SIGTERM hands the Lease over at once.
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { Widget, type WidgetObject, installWidgetCrd } from './fixtures/widget.ts';
import { clientFor, eventually } from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('le');
const children: ChildProcess[] = [];

// The operator's defaults (codebrowse operator --help): 15 s, 10 s, 2 s.
const LEASE_MS = 15_000;
const RENEW_MS = 10_000;
const RETRY_MS = 2_000;

interface Operator {
  identity: string;
  process: ChildProcess;
  address: string;
}

async function startOperator(identity: string): Promise<Operator> {
  const child = spawn(
    process.execPath,
    [
      join(import.meta.dirname, 'fixtures', 'widget-operator.ts'),
      testKubeconfigPath(),
      ns.name,
      identity,
      String(LEASE_MS),
      String(RENEW_MS),
      String(RETRY_MS),
    ],
    { stdio: ['ignore', 'pipe', process.env.CODEBROWSE_TEST_LOG ? 'inherit' : 'ignore'] },
  );
  children.push(child);
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve((JSON.parse(out.split('\n')[0]!) as { address: string }).address);
    });
    child.once('exit', (code) => reject(new Error(`operator ${identity} exited early with ${code}`)));
  });
  return { identity, process: child, address };
}

async function metricsOf(operator: Operator): Promise<string> {
  return (await fetch(`http://${operator.address}/metrics`)).text();
}

async function isLeader(operator: Operator): Promise<boolean> {
  return /codebrowse_leader\{lease="widget-operator"\} 1\b/.test(await metricsOf(operator));
}

async function reconciledBy(name: string): Promise<string | undefined> {
  const cm = await admin.get<KubeObject & { data?: Record<string, string> }>(
    Resources.ConfigMap,
    `widget-${name}`,
    ns.name,
  );
  return cm?.data?.reconciledBy;
}

async function leaseHolder(): Promise<string | undefined> {
  const lease = await admin.get<KubeObject & { spec?: { holderIdentity?: string } }>(
    Resources.Lease,
    'widget-operator',
    ns.name,
  );
  return lease?.spec?.holderIdentity || undefined;
}

function widget(name: string): WidgetObject {
  return { metadata: { name, namespace: ns.name }, spec: { color: 'orange' } };
}

beforeAll(async () => {
  await installWidgetCrd(admin);
});

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

describe('leader election', () => {
  it('exactly one of two operators reconciles, and a SIGKILLed leader is replaced within lease duration + renew deadline', async () => {
    const first = await startOperator('first');
    await eventually('first leads', () => isLeader(first));
    const second = await startOperator('second');
    await eventually('second has synced', async () => (await fetch(`http://${second.address}/readyz`)).status === 200);

    for (const name of ['w1', 'w2', 'w3']) await admin.create(Widget, widget(name));
    for (const name of ['w1', 'w2', 'w3'])
      expect(await eventually(`${name} reconciled`, () => reconciledBy(name))).toBe('first');
    const secondMetrics = await metricsOf(second);
    expect(secondMetrics).not.toMatch(/codebrowse_reconcile_total\{/);
    expect(secondMetrics).toMatch(/codebrowse_leader\{lease="widget-operator"\} 0\b/);

    const killedAt = Date.now();
    first.process.kill('SIGKILL');
    await admin.create(Widget, widget('w4'));
    await eventually('second holds the lease', async () => (await leaseHolder()) === 'second', LEASE_MS + RENEW_MS);
    const leaseTakenMs = Date.now() - killedAt;
    await eventually(
      'w4 reconciled by second',
      async () => (await reconciledBy('w4')) === 'second',
      LEASE_MS + RENEW_MS,
    );
    const takeoverMs = Date.now() - killedAt;
    console.log(
      `leader SIGKILLed: lease taken over after ${(leaseTakenMs / 1000).toFixed(1)} s, first reconcile by the new leader after ${(takeoverMs / 1000).toFixed(1)} s (lease ${LEASE_MS / 1000} s, renew deadline ${RENEW_MS / 1000} s, retry ${RETRY_MS / 1000} s)`,
    );
    expect(takeoverMs).toBeLessThan(LEASE_MS + RENEW_MS);
    // The lease was not taken early: the dead leader's renewals count for a full lease duration.
    expect(leaseTakenMs).toBeGreaterThanOrEqual(LEASE_MS - RETRY_MS);
  });

  it('a leader stopped with SIGTERM releases the lease and the other takes over at once', async () => {
    const first = await startOperator('first');
    await eventually('first leads', () => isLeader(first));
    const second = await startOperator('second');
    await eventually('second has synced', async () => (await fetch(`http://${second.address}/readyz`)).status === 200);

    const exited = new Promise<number | null>((resolve) => first.process.once('exit', (code) => resolve(code)));
    const stoppedAt = Date.now();
    first.process.kill('SIGTERM');
    expect(await exited).toBe(0);
    await eventually('second holds the lease', async () => (await leaseHolder()) === 'second', 10_000);
    const handoverMs = Date.now() - stoppedAt;
    console.log(`leader SIGTERMed: lease handed over after ${(handoverMs / 1000).toFixed(1)} s`);
    expect(handoverMs).toBeLessThan(RETRY_MS * 2 + 1000);
    await admin.create(Widget, widget('after'));
    expect(await eventually('reconciled by the new leader', () => reconciledBy('after'))).toBe('second');
  });

  it("a leader that reads the Lease in another holder's hands stops at once and exits 1 without taking it back", async () => {
    const first = await startOperator('first');
    await eventually('first leads', () => isLeader(first));
    await admin.create(Widget, widget('before'));
    expect(await eventually('before reconciled', () => reconciledBy('before'))).toBe('first');

    const exited = new Promise<number | null>((resolve) => first.process.once('exit', (code) => resolve(code)));
    const lease = await admin.get<KubeObject & { spec: Record<string, unknown> }>(
      Resources.Lease,
      'widget-operator',
      ns.name,
    );
    const now = new Date().toISOString().replace(/Z$/, '000Z');
    const takenAt = Date.now();
    await admin.replace(Resources.Lease, {
      ...lease!,
      spec: { ...lease!.spec, holderIdentity: 'intruder', leaseDurationSeconds: 60, renewTime: now, acquireTime: now },
    });
    expect(await exited).toBe(1);
    const stoppedMs = Date.now() - takenAt;
    console.log(`leader found the lease taken: exited after ${(stoppedMs / 1000).toFixed(1)} s`);
    expect(stoppedMs).toBeLessThan(RETRY_MS * 2 + 1000);
    expect(await leaseHolder()).toBe('intruder');
  });
});
