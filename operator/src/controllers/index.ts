// The controllers the operator role runs. Each lives in its own folder (serverpool/,
// downloadrequest/, browsesession/, warmpool/) and is added here as it is built.
import type { BrowseSession, ServerPool } from '../api/objects.ts';
import type { Manager } from '../runtime/manager.ts';
import { Resources } from '../runtime/resources.ts';
import { browseSessionController } from './browsesession/controller.ts';
import { serverPoolController } from './serverpool/controller.ts';

export interface ControllerSettings {
  workers: number;
  /** For tests: the gatekeeper's dice. */
  random?: () => number;
}

export function registerControllers(manager: Manager, settings: ControllerSettings): void {
  // Shared caches (one list+watch per kind for all controllers).
  const pools = () => manager.informer<ServerPool>(Resources.ServerPool);
  const sessions = () => manager.informer<BrowseSession>(Resources.BrowseSession);
  manager.addController(serverPoolController({ pools }));
  manager.addController(browseSessionController({ sessions, workers: settings.workers, random: settings.random }));
}
