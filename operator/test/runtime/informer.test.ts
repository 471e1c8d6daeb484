// Watches that survive: an API server that goes away and comes back, a resourceVersion that has
// been compacted away (410 Gone), and a watch that goes silent. Each test file of this kind runs
// its own control plane, since it stops, freezes and compacts it.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { ControlPlane } from '../../../e2e/cluster/control-plane.ts';
import type { KubeClient, KubeObject } from '../../src/runtime/client.ts';
import { Informer } from '../../src/runtime/informer.ts';
import { OperatorMetrics } from '../../src/runtime/metrics.ts';
import { Resources, defineResource } from '../../src/runtime/resources.ts';
import { Widget, type WidgetObject, installWidgetCrd } from './fixtures/widget.ts';
import { clientFor, eventually, testLogger, widgetManager } from './harness.ts';

const binDir = process.env.CODEBROWSE_BIN_DIR ?? '';
const CustomResourceDefinition = defineResource(
  'apiextensions.k8s.io',
  'v1',
  'CustomResourceDefinition',
  'customresourcedefinitions',
  false,
);

function widget(namespace: string, name: string, color: string): WidgetObject {
  return { metadata: { name, namespace }, spec: { color } };
}

async function namespace(client: KubeClient, name: string): Promise<void> {
  await client.create(Resources.Namespace, { metadata: { name } });
}

async function configMapColor(client: KubeClient, namespace: string, name: string): Promise<string | undefined> {
  const cm = await client.get<KubeObject & { data?: Record<string, string> }>(Resources.ConfigMap, name, namespace);
  return cm?.data?.color;
}

describe('an informer against an API server that restarts', () => {
  let plane: ControlPlane;
  let admin: KubeClient;

  beforeAll(async () => {
    plane = await ControlPlane.start({ binDir });
    admin = clientFor(plane.kubeconfig);
    await installWidgetCrd(admin);
  });

  afterAll(async () => {
    await admin?.close();
    await plane?.stop();
  });

  it('catches up with every change made while the API server was down, with one side effect per change', async () => {
    await namespace(admin, 'restart');
    const { manager, journal } = widgetManager(plane.kubeconfig, {
      namespace: 'restart',
      informer: { backoffBaseMs: 200, backoffMaxMs: 1000 },
    });
    await manager.start();
    try {
      for (const name of ['a', 'b', 'c']) await admin.create(Widget, widget('restart', name, 'red'));
      await eventually('three ConfigMaps', async () => (await configMapColor(admin, 'restart', 'widget-c')) === 'red');
      await eventually('three widgets reported', () => journal.statusWrites.length >= 3);

      // The operator's API server goes away; the changes go through a second one on the same etcd.
      const second = await plane.startSecondApiserver();
      const other = clientFor(second.kubeconfig);
      await plane.stopApiserver();
      await other.mergePatch(Widget, 'a', 'restart', { spec: { color: 'green' } });
      await other.create(Widget, widget('restart', 'd', 'blue'));
      await other.delete(Widget, 'b', 'restart');
      const writesBefore = journal.configMapWrites.length;
      await plane.startApiserver();

      await eventually('a turned green', async () => (await configMapColor(admin, 'restart', 'widget-a')) === 'green');
      await eventually('d is blue', async () => (await configMapColor(admin, 'restart', 'widget-d')) === 'blue');
      const widgets = manager.informer<WidgetObject>(Widget);
      await eventually('b is gone from the cache', () => widgets.get('restart/b') === undefined);
      expect(
        widgets
          .list()
          .map((w) => `${w.metadata.name}:${w.spec.color}`)
          .sort(),
      ).toEqual(['a:green', 'c:red', 'd:blue']);

      // Let every late event and resync arrive, then count: one ConfigMap write per change.
      await eventually('statuses reported', async () => {
        const d = await admin.get<WidgetObject>(Widget, 'd', 'restart');
        return d?.status?.color === 'blue';
      });
      expect(journal.configMapWrites.slice(writesBefore)).toEqual(
        expect.arrayContaining([
          { key: 'restart/a', color: 'green' },
          { key: 'restart/d', color: 'blue' },
        ]),
      );
      expect(journal.configMapWrites.slice(writesBefore)).toHaveLength(2);
      const statusKeys = journal.statusWrites.map((w) => `${w.key}@${w.generation}`);
      expect(new Set(statusKeys).size).toBe(statusKeys.length);
      expect(widgets.restarts.error + widgets.restarts.gone).toBeGreaterThan(0);
      await other.close();
      await second.stop();
    } finally {
      await manager.stop();
    }
  });

  it('answers /readyz with 503 until its caches have synced', async () => {
    await namespace(admin, 'ready');
    await plane.stopApiserver();
    const { manager } = widgetManager(plane.kubeconfig, {
      namespace: 'ready',
      httpAddress: '127.0.0.1:0',
      informer: { backoffBaseMs: 200, backoffMaxMs: 500 },
    });
    try {
      await manager.start();
      const readyz = `http://${manager.httpAddress}/readyz`;
      const notReady = await fetch(readyz);
      expect(notReady.status).toBe(503);
      expect(await notReady.text()).toMatch(/caches not synced: .*widgets\.test\.codebrowse\.io/);
      expect((await fetch(`http://${manager.httpAddress}/healthz`)).status).toBe(200);
      await plane.startApiserver();
      await eventually('ready once synced', async () => (await fetch(readyz)).status === 200);
    } finally {
      await manager.stop();
      await plane.startApiserver().catch(() => undefined);
    }
  });

  it('counts an optional API the cluster does not serve as synced and empty, and fills in once it is installed', async () => {
    const Gizmo = defineResource('gizmo.codebrowse.io', 'v1', 'Gizmo', 'gizmos');
    const informer = new Informer(admin, Gizmo, testLogger(), new OperatorMetrics(), {
      optional: true,
      backoffBaseMs: 100,
      backoffMaxMs: 300,
    });
    const seen: string[] = [];
    informer.on(({ type, object }) => seen.push(`${type} ${object.metadata.name}`));
    informer.start();
    try {
      await informer.waitForSync();
      expect(informer.hasSynced).toBe(true);
      expect(informer.served).toBe(false);
      expect(informer.list()).toEqual([]);
      await admin.apply(
        CustomResourceDefinition,
        {
          apiVersion: 'apiextensions.k8s.io/v1',
          kind: 'CustomResourceDefinition',
          metadata: { name: 'gizmos.gizmo.codebrowse.io' },
          spec: {
            group: 'gizmo.codebrowse.io',
            scope: 'Namespaced',
            names: { plural: 'gizmos', singular: 'gizmo', kind: 'Gizmo', listKind: 'GizmoList' },
            versions: [
              {
                name: 'v1',
                served: true,
                storage: true,
                schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
              },
            ],
          },
        } as KubeObject,
        { fieldManager: 'test', force: true },
      );
      await namespace(admin, 'gizmos');
      await eventually('the Gizmo API served', async () => {
        try {
          await admin.create(Gizmo, { metadata: { name: 'one', namespace: 'gizmos' } });
          return true;
        } catch {
          return undefined;
        }
      });
      await eventually('the gizmo seen', () => seen.includes('added one'));
      expect(informer.served).toBe(true);
      // A non-optional informer of a missing API is not synced (readyz stays 503 for it).
      const strict = new Informer(admin, defineResource('none.codebrowse.io', 'v1', 'None', 'nones'), testLogger());
      strict.start();
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(strict.hasSynced).toBe(false);
      await strict.stop();
    } finally {
      await informer.stop();
    }
  });

  it('restarts a watch that has gone silent, and catches up once the server answers again', async () => {
    await namespace(admin, 'silent');
    const metrics = new OperatorMetrics();
    const informer = new Informer<WidgetObject>(admin, Widget, testLogger(), metrics, {
      namespace: 'silent',
      staleAfterMs: 1500,
      backoffBaseMs: 100,
      backoffMaxMs: 300,
    });
    informer.start();
    try {
      await informer.waitForSync();
      // While events flow, the watchdog stays quiet.
      for (let i = 0; i < 8; i++) {
        await admin.create(Widget, widget('silent', `busy-${i}`, 'gray'));
        await eventually('event seen', () => informer.get(`silent/busy-${i}`));
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      expect(informer.restarts.stale).toBe(0);

      await plane.pauseApiserver();
      await eventually('the watchdog restarts the silent watch', () => informer.restarts.stale >= 1, 6000);
      plane.resumeApiserver();
      await admin.create(Widget, widget('silent', 'after', 'white'));
      await eventually('the change after the silence arrives', () => informer.get('silent/after'), 10_000);
      const text = await metrics.registry.metrics();
      expect(text).toMatch(
        /codebrowse_watch_restarts_total\{resource="widgets.test.codebrowse.io",reason="stale"\} [1-9]/,
      );
    } finally {
      plane.resumeApiserver();
      await informer.stop();
    }
  });
});

describe('an informer whose resourceVersion was compacted away', () => {
  let plane: ControlPlane;
  let admin: KubeClient;

  beforeAll(async () => {
    // Without the watch cache, watches are served by etcd, which forgets compacted revisions.
    plane = await ControlPlane.start({ binDir, extraApiserverArgs: ['--watch-cache=false'] });
    admin = clientFor(plane.kubeconfig);
    await installWidgetCrd(admin);
    await namespace(admin, 'gone');
    await namespace(admin, 'elsewhere');
  });

  afterAll(async () => {
    await admin?.close();
    await plane?.stop();
  });

  it('relists on 410 Gone and goes on delivering changes', async () => {
    const informer = new Informer<WidgetObject>(admin, Widget, testLogger(), undefined, {
      namespace: 'gone',
      watchTimeoutSeconds: 2,
      backoffBaseMs: 100,
    });
    informer.start();
    try {
      await informer.waitForSync();
      await admin.create(Widget, widget('gone', 'before', 'black'));
      await eventually('seen', () => informer.get('gone/before'));
      // Writes elsewhere move etcd on; compacting makes the informer's resourceVersion history.
      for (let i = 0; i < 3; i++)
        await admin.create(Resources.ConfigMap, { metadata: { name: `cm-${i}`, namespace: 'elsewhere' } });
      await plane.compactEtcd();
      // The server ends the 2 s watch; watching again from the old resourceVersion gets 410.
      await eventually('a relist after 410 Gone', () => informer.restarts.gone >= 1, 10_000);
      await admin.create(Widget, widget('gone', 'after', 'white'));
      await eventually('later changes arrive', () => informer.get('gone/after'));
      expect(
        informer
          .list()
          .map((w) => w.metadata.name)
          .sort(),
      ).toEqual(['after', 'before']);
    } finally {
      await informer.stop();
    }
  });
});
