// The reconcile driver against the real API server: retries with growing delays, timed requeues,
// errors shown where a user looks (a condition and an Event), no writes when nothing changed,
// and the process endpoints.
import { afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import type { KubeObject } from '../../src/runtime/client.ts';
import type { Condition } from '../../src/runtime/conditions.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { Widget, type WidgetObject, installWidgetCrd } from './fixtures/widget.ts';
import { type WidgetManager, clientFor, eventually, widgetManager } from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('rt');
let running: WidgetManager | undefined;

beforeAll(async () => {
  await installWidgetCrd(admin);
});

afterEach(async () => {
  await running?.manager.stop();
  running = undefined;
});

function widget(name: string, spec: WidgetObject['spec']): WidgetObject {
  return { apiVersion: 'test.codebrowse.io/v1', kind: 'Widget', metadata: { name, namespace: ns.name }, spec };
}

async function readyWidget(name: string): Promise<WidgetObject | undefined> {
  const object = await admin.get<WidgetObject>(Widget, name, ns.name);
  const ready = object?.status?.conditions?.find((c) => c.type === 'Ready');
  return ready?.status === 'True' && object?.status?.observedGeneration === object?.metadata.generation
    ? object
    : undefined;
}

function gaps(times: number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i]!);
}

describe('reconcile driver', () => {
  it('a reconciler that fails three times is retried with growing delays and succeeds on the fourth', async () => {
    running = widgetManager(testKubeconfigPath(), { namespace: ns.name });
    await running.manager.start();
    await admin.create(Widget, widget('flaky', { color: 'blue', failTimes: 3 }));

    // While it fails, the user sees why in the Ready condition.
    const failing = await eventually('Ready=False with ReconcileError', async () => {
      const object = await admin.get<WidgetObject>(Widget, 'flaky', ns.name);
      const ready = object?.status?.conditions?.find((c: Condition) => c.type === 'Ready');
      return ready?.reason === 'ReconcileError' ? ready : undefined;
    });
    expect(failing.status).toBe('False');
    expect(failing.message).toMatch(/fails on purpose \(\d of 3\) \(retrying in \d+ s\)/);

    const done = await eventually('widget ready after the fourth attempt', () => readyWidget('flaky'));
    expect(done.status?.color).toBe('blue');
    // Four attempts, the fourth wrote the ConfigMap (a later no-op reconcile may follow its event).
    const attempts = running.journal.attemptsFor(`${ns.name}/flaky`).slice(0, 4);
    expect(attempts).toHaveLength(4);
    expect(running.journal.configMapWrites).toEqual([{ key: `${ns.name}/flaky`, color: 'blue' }]);
    const [first, second, third] = gaps(attempts);
    // 1 s, 2 s, 4 s by the queue's backoff; a busy machine only makes them later.
    expect(first).toBeGreaterThanOrEqual(950);
    expect(second).toBeGreaterThanOrEqual(1950);
    expect(third).toBeGreaterThanOrEqual(3950);
    expect(second!).toBeGreaterThan(first! * 1.5);
    expect(third!).toBeGreaterThan(second! * 1.5);

    // Each failure left a Warning Event on the widget, as kubectl describe shows them.
    const events = await admin.list<KubeObject & { reason: string; type: string; involvedObject: { name: string } }>(
      Resources.Event,
      ns.name,
    );
    const warnings = events.items.filter((e) => e.reason === 'ReconcileError' && e.involvedObject.name === 'flaky');
    expect(warnings).toHaveLength(3);
    expect(warnings.every((e) => e.type === 'Warning')).toBe(true);
    expect(events.items.some((e) => e.reason === 'ConfigMapApplied')).toBe(true);
  });

  it('a requeueAfter of 2 s reconciles the object again 2 s later', async () => {
    running = widgetManager(testKubeconfigPath(), { namespace: ns.name });
    await running.manager.start();
    await admin.create(Widget, widget('timed', { color: 'green', requeueAfterMs: 2000 }));
    const key = `${ns.name}/timed`;
    await eventually('three reconciles', () => running!.journal.attemptsFor(key).length >= 4, 15_000);
    // The first gap may be shortened by the reconcile our own ConfigMap write triggers. Not before
    // 2 s, and long before anything else would reconcile it (the resync is minutes away); a machine
    // busy with QEMU beside the suite delays timers by a second and more.
    for (const gap of gaps(running.journal.attemptsFor(key)).slice(-2)) {
      expect(gap).toBeGreaterThanOrEqual(1990);
      expect(gap).toBeLessThan(4500);
    }
  });

  it('reconciling an unchanged object writes nothing', async () => {
    running = widgetManager(testKubeconfigPath(), { namespace: ns.name, informer: { resyncMs: 300 } });
    await running.manager.start();
    await admin.create(Widget, widget('calm', { color: 'red' }));
    const ready = await eventually('widget ready', () => readyWidget('calm'));
    const configMap = await eventually('its ConfigMap', () =>
      admin.get<KubeObject>(Resources.ConfigMap, 'widget-calm', ns.name),
    );
    const key = `${ns.name}/calm`;
    const writesBefore = await running.metrics.apiWrites();
    const reconcilesBefore = running.journal.attemptsFor(key).length;

    await eventually(
      'ten more reconciles (resyncs)',
      () => running!.journal.attemptsFor(key).length >= reconcilesBefore + 10,
    );

    expect(await running.metrics.apiWrites()).toBe(writesBefore);
    expect((await admin.get<WidgetObject>(Widget, 'calm', ns.name))?.metadata.resourceVersion).toBe(
      ready.metadata.resourceVersion,
    );
    expect((await admin.get<KubeObject>(Resources.ConfigMap, 'widget-calm', ns.name))?.metadata.resourceVersion).toBe(
      configMap.metadata.resourceVersion,
    );
    expect(running.journal.configMapWrites.filter((w) => w.key === key)).toHaveLength(1);

    // A change is one write to the ConfigMap and one to the status, not more.
    await admin.mergePatch(Widget, 'calm', ns.name, { spec: { color: 'yellow' } });
    await eventually('the ConfigMap follows', async () => {
      const cm = await admin.get<KubeObject & { data?: Record<string, string> }>(
        Resources.ConfigMap,
        'widget-calm',
        ns.name,
      );
      return cm?.data?.color === 'yellow';
    });
    await eventually('status follows', () => readyWidget('calm'));
    const reconciles = running.journal.attemptsFor(key).length;
    await eventually('five more resyncs', () => running!.journal.attemptsFor(key).length >= reconciles + 5);
    expect(running.journal.configMapWrites.filter((w) => w.key === key).map((w) => w.color)).toEqual(['red', 'yellow']);
    expect(running.journal.statusWrites.filter((w) => w.key === key)).toHaveLength(2);
  });

  it('serves /metrics with reconcile, queue, watch and leader series, and /healthz', async () => {
    running = widgetManager(testKubeconfigPath(), {
      namespace: ns.name,
      httpAddress: '127.0.0.1:0',
      identity: 'metrics-test',
      informer: { watchTimeoutSeconds: 1 },
      leaderElection: {
        namespace: ns.name,
        name: 'widget-operator',
        retryPeriodMs: 200,
        renewDeadlineMs: 1000,
        leaseDurationMs: 2000,
      },
    });
    await running.manager.start();
    const base = `http://${running.manager.httpAddress}`;
    await admin.create(Widget, widget('measured', { color: 'teal', failTimes: 1 }));
    await eventually('widget ready', () => readyWidget('measured'));
    // The server ends each 1 s watch; the informer watches again and counts it.
    const metrics = await eventually('watch restarts counted', async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      return /codebrowse_watch_restarts_total\{resource="widgets.test.codebrowse.io",reason="closed"\} [1-9]/.test(text)
        ? text
        : undefined;
    });
    expect(metrics).toMatch(/codebrowse_reconcile_total\{controller="widget",result="success"\} [1-9]/);
    expect(metrics).toMatch(/codebrowse_reconcile_total\{controller="widget",result="error"\} 1\b/);
    expect(metrics).toMatch(/codebrowse_reconcile_errors_total\{controller="widget"\} 1\b/);
    expect(metrics).toMatch(/codebrowse_reconcile_duration_seconds_bucket\{le="0.1",controller="widget"\} \d+/);
    expect(metrics).toMatch(/codebrowse_workqueue_depth\{controller="widget"\} \d+/);
    expect(metrics).toMatch(/codebrowse_leader\{lease="widget-operator"\} 1\b/);
    expect(metrics).toMatch(/codebrowse_informer_synced\{resource="configmaps"\} 1\b/);
    expect(metrics).toMatch(/codebrowse_api_requests_total\{verb="apply",resource="configmaps",code="201"\} 1\b/);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
  });
});
