// How controllers write, against the real API server: server-side apply under the field manager
// `codebrowse` (skipped when nothing would change, repeated when a field is dropped), status merge
// patches that remove what is no longer said, finalizers as a compare-and-swap, and Events that
// count repeats instead of piling up.
import { beforeAll, describe, expect, it } from '@jest/globals';
import { testKubeconfigPath, useTestNamespace } from '../../../e2e/cluster/test-env.ts';
import { type KubeObject, isConflict } from '../../src/runtime/client.ts';
import { FIELD_MANAGER, Writer } from '../../src/runtime/apply.ts';
import { EventRecorder } from '../../src/runtime/events.ts';
import { Resources } from '../../src/runtime/resources.ts';
import { Widget, type WidgetObject, installWidgetCrd } from './fixtures/widget.ts';
import { clientFor, testLogger } from './harness.ts';

const admin = clientFor(testKubeconfigPath());
const ns = useTestNamespace('wr');

interface ConfigMap extends KubeObject {
  data?: Record<string, string>;
}

interface EventObject extends KubeObject {
  reason: string;
  message: string;
  count: number;
  type: string;
  involvedObject: { name: string; uid?: string };
}

function configMap(name: string, data: Record<string, string>, labels?: Record<string, string>): ConfigMap {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: ns.name, labels }, data };
}

/** A Writer and a count of the writes that reached the API server. */
function countingWriter(): { writer: Writer; writes: () => number } {
  const client = clientFor(testKubeconfigPath());
  let writes = 0;
  client.onRequest((verb) => {
    if (!['get', 'list', 'watch'].includes(verb)) writes++;
  });
  return { writer: new Writer(client), writes: () => writes };
}

beforeAll(async () => {
  await installWidgetCrd(admin);
});

describe('server-side apply', () => {
  it('creates under the field manager codebrowse and writes nothing when applied again unchanged', async () => {
    const { writer, writes } = countingWriter();
    const first = await writer.apply(Resources.ConfigMap, configMap('a1', { color: 'red' }));
    expect(first.written).toBe(true);
    const managers = ((first.object.metadata.managedFields ?? []) as { manager: string; operation: string }[]).map(
      (f) => `${f.manager}/${f.operation}`,
    );
    expect(managers).toContain(`${FIELD_MANAGER}/Apply`);
    const before = writes();
    const again = await writer.apply(Resources.ConfigMap, configMap('a1', { color: 'red' }));
    expect(again.written).toBe(false);
    expect(writes()).toBe(before);
    expect(again.object.metadata.resourceVersion).toBe(first.object.metadata.resourceVersion);
  });

  it('removes a field that was dropped from what we apply, and puts back a field someone else changed', async () => {
    const { writer } = countingWriter();
    await writer.apply(Resources.ConfigMap, configMap('a2', { color: 'red', size: 'big' }, { tier: 'warm' }));
    const dropped = await writer.apply(Resources.ConfigMap, configMap('a2', { color: 'red' }));
    expect(dropped.written).toBe(true);
    const live = await admin.get<ConfigMap>(Resources.ConfigMap, 'a2', ns.name);
    expect(live?.data).toEqual({ color: 'red' });
    expect(live?.metadata.labels?.tier).toBeUndefined();

    await admin.mergePatch(Resources.ConfigMap, 'a2', ns.name, { data: { color: 'blue' } });
    const restored = await writer.apply(Resources.ConfigMap, configMap('a2', { color: 'red' }));
    expect(restored.written).toBe(true);
    expect((await admin.get<ConfigMap>(Resources.ConfigMap, 'a2', ns.name))?.data).toEqual({ color: 'red' });
  });
});

describe('status', () => {
  it('merge-patches /status to exactly what is given, and skips the write when it is already so', async () => {
    const { writer, writes } = countingWriter();
    const created = await admin.create<WidgetObject>(Widget, {
      metadata: { name: 's1', namespace: ns.name },
      spec: { color: 'red' },
    });
    const one = await writer.patchStatus(Widget, created, { observedGeneration: 1, color: 'pink' });
    expect(one.written).toBe(true);
    const two = await writer.patchStatus(Widget, one.object, { observedGeneration: 2 });
    expect(two.written).toBe(true);
    const live = await admin.get<WidgetObject>(Widget, 's1', ns.name);
    expect(live?.status).toEqual({ observedGeneration: 2 });
    expect(live?.spec).toEqual({ color: 'red' });
    const before = writes();
    const three = await writer.patchStatus(Widget, live!, { observedGeneration: 2 });
    expect(three.written).toBe(false);
    expect(writes()).toBe(before);
  });
});

describe('finalizers', () => {
  it('adds and removes a finalizer only on the version that was read: a stale copy gets a conflict and changes nothing', async () => {
    const { writer } = countingWriter();
    const created = await admin.create<ConfigMap>(Resources.ConfigMap, configMap('f1', { a: '1' }));
    const withFinalizer = await writer.addFinalizer(Resources.ConfigMap, created, 'codebrowse.io/cleanup');
    expect(withFinalizer.metadata.finalizers).toEqual(['codebrowse.io/cleanup']);
    expect(await writer.addFinalizer(Resources.ConfigMap, withFinalizer, 'codebrowse.io/cleanup')).toBe(withFinalizer);

    // Someone else changes the object: our copy is stale now.
    await admin.mergePatch(Resources.ConfigMap, 'f1', ns.name, { data: { a: '2' } });
    const error = await writer.removeFinalizer(Resources.ConfigMap, withFinalizer, 'codebrowse.io/cleanup').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isConflict(error)).toBe(true);
    expect((await admin.get<ConfigMap>(Resources.ConfigMap, 'f1', ns.name))?.metadata.finalizers).toEqual([
      'codebrowse.io/cleanup',
    ]);

    // Read again, then the removal goes through and a pending delete completes.
    await admin.delete(Resources.ConfigMap, 'f1', ns.name);
    const fresh = await admin.get<ConfigMap>(Resources.ConfigMap, 'f1', ns.name);
    expect(fresh?.metadata.deletionTimestamp).toBeDefined();
    await writer.removeFinalizer(Resources.ConfigMap, fresh!, 'codebrowse.io/cleanup');
    expect(await admin.get(Resources.ConfigMap, 'f1', ns.name)).toBeUndefined();
  });

  it('keeps the finalizers others put there', async () => {
    const { writer } = countingWriter();
    const created = await admin.create<ConfigMap>(Resources.ConfigMap, {
      ...configMap('f2', {}),
      metadata: { name: 'f2', namespace: ns.name, finalizers: ['example.com/theirs'] },
    });
    const ours = await writer.addFinalizer(Resources.ConfigMap, created, 'codebrowse.io/cleanup');
    expect(ours.metadata.finalizers).toEqual(['example.com/theirs', 'codebrowse.io/cleanup']);
    const removed = await writer.removeFinalizer(Resources.ConfigMap, ours, 'codebrowse.io/cleanup');
    expect(removed.metadata.finalizers).toEqual(['example.com/theirs']);
    await writer.removeFinalizer(Resources.ConfigMap, removed, 'example.com/theirs').catch(() => undefined);
    await admin.mergePatch(Resources.ConfigMap, 'f2', ns.name, { metadata: { finalizers: null } });
  });
});

describe('events', () => {
  it('records an Event on the object, and counts a repeat instead of adding another Event', async () => {
    const recorder = new EventRecorder(admin, 'codebrowse-test', 'test-1', testLogger());
    const object = await admin.create<ConfigMap>(Resources.ConfigMap, configMap('e1', {}));
    const subject = { ...object, apiVersion: 'v1', kind: 'ConfigMap' };
    await recorder.record(subject, 'Normal', 'Scheduled', 'placed on node-1');
    await recorder.record(subject, 'Normal', 'Scheduled', 'placed on node-1');
    await recorder.record(subject, 'Normal', 'Scheduled', 'placed on node-1');
    await recorder.record(subject, 'Warning', 'DownloadFailed', `x${'y'.repeat(5000)}`);
    const events = (await admin.list<EventObject>(Resources.Event, ns.name)).items.filter(
      (e) => e.involvedObject.uid === object.metadata.uid,
    );
    const byReason = Object.fromEntries(events.map((e) => [e.reason, e]));
    expect(events).toHaveLength(2);
    expect(byReason.Scheduled).toMatchObject({ type: 'Normal', count: 3, message: 'placed on node-1' });
    expect(byReason.DownloadFailed?.type).toBe('Warning');
    expect(byReason.DownloadFailed?.message.length).toBeLessThanOrEqual(1024);
  });
});
