// The controllers the operator role runs. Each lives in its own folder (serverpool/,
// downloadrequest/, browsesession/, warmpool/) and is added here as it is built.
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import type { Manager } from '../runtime/manager.ts';
import { carryLabelPrefixes } from '../vm/carried-labels.ts';
import { Resources } from '../runtime/resources.ts';
import { sessionArchiveController } from './archive/controller.ts';
import { browseSessionController } from './browsesession/controller.ts';
import { serverPoolController } from './serverpool/controller.ts';
import { warmPoolController } from './warmpool/controller.ts';
import { DEFAULT_VM_NAMESPACE } from '../vm/builders.ts';
import type { Mailer } from '../notify/mailer.ts';
import type { Registry } from 'prom-client';
import { sessionMetrics } from './browsesession/metrics.ts';

export interface ControllerSettings {
  workers: number;
  /** Where guest agents reach the portal (their per-VM token goes with it). */
  portalUrl: string;
  /** Base URL of the session pages mailed to users. */
  pageBaseUrl: string;
  mailer?: Mailer;
  /** Where the session metrics go (the process's /metrics). */
  registry?: Registry;
  /** For tests: the gatekeeper's dice. */
  random?: () => number;
  /** The VM namespace (the pools' spec.vmNamespace): codebrowse's Secrets are read only there. */
  vmNamespace?: string;
  /** What the API server puts before user names (RoleBindings that let a user port-forward to their VM). */
  usernamePrefix?: string;
  /** Label prefixes copied from sessions and archives onto what is made for them (vm/carried-labels.ts). */
  carryLabelPrefixes?: string[];
}

export function registerControllers(manager: Manager, settings: ControllerSettings): void {
  carryLabelPrefixes(settings.carryLabelPrefixes ?? []);
  // Shared caches (one list+watch per kind for all controllers).
  const pools = () => manager.informer<ServerPool>(Resources.ServerPool);
  const sessions = () => manager.informer<BrowseSession>(Resources.BrowseSession);
  const vmNamespace = settings.vmNamespace ?? DEFAULT_VM_NAMESPACE;
  manager.addController(serverPoolController({ pools, vmNamespace }));
  const metrics = settings.registry ? sessionMetrics(settings.registry, sessions, pools) : undefined;
  manager.addController(
    browseSessionController({
      onReady: (session) => metrics?.ready(session),
      onClaim: (kind) => metrics?.claim(kind),
      sessions,
      pools,
      vmNamespace,
      workers: settings.workers,
      random: settings.random,
      portalUrl: settings.portalUrl,
      usernamePrefix: settings.usernamePrefix,
      pageBaseUrl: settings.pageBaseUrl,
      mailer: settings.mailer,
    }),
  );
  manager.addController(sessionArchiveController({ vmNamespace }));
  manager.addController(warmPoolController({ portalUrl: settings.portalUrl, vmNamespace, pools }));
}
