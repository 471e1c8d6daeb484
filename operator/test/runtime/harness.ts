// What the runtime tests share: a client for a kubeconfig, a quiet logger, a way to wait for an
// outcome, and a manager running the widget controller.
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeClient } from '../../src/runtime/client.ts';
import { KubeAccess } from '../../src/runtime/kubeconfig.ts';
import type { InformerOptions } from '../../src/runtime/informer.ts';
import { createLogger, type Logger } from '../../src/runtime/log.ts';
import { Manager, type ManagerOptions } from '../../src/runtime/manager.ts';
import { OperatorMetrics } from '../../src/runtime/metrics.ts';
import { Journal, widgetController } from './fixtures/widget.ts';

/** A client as the processes make one (our own kubeconfig loader, not client-node's). */
export function clientFor(kubeconfig: string): KubeClient {
  return new KubeClient(KubeAccess.fromFile(kubeconfig), 'codebrowse-test');
}

/** Logs only when CODEBROWSE_TEST_LOG is set (e.g. to debug). */
export function testLogger(): Logger {
  return createLogger(process.env.CODEBROWSE_TEST_LOG ?? 'silent');
}

/** Polls `check` until it returns a value that is not undefined/false. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (last error: ${String(last)})` : ''}`);
    await sleep(intervalMs);
  }
}

export interface WidgetManager {
  manager: Manager;
  journal: Journal;
  metrics: OperatorMetrics;
  client: KubeClient;
}

export function widgetManager(
  kubeconfig: string,
  options: {
    identity?: string;
    namespace?: string;
    informer?: InformerOptions;
    httpAddress?: string | false;
    leaderElection?: ManagerOptions['leaderElection'];
  } = {},
): WidgetManager {
  const client = clientFor(kubeconfig);
  const metrics = new OperatorMetrics();
  const journal = new Journal();
  const identity = options.identity ?? 'test-operator';
  const manager = new Manager({
    client,
    log: testLogger(),
    metrics,
    identity,
    httpAddress: options.httpAddress ?? false,
    leaderElection: options.leaderElection ?? false,
    informerDefaults: { namespace: options.namespace, ...options.informer },
  });
  manager.addController(widgetController(identity, journal));
  return { manager, journal, metrics, client };
}
