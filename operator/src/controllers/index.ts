// The controllers the operator role runs. Each lives in its own folder (serverpool/,
// downloadrequest/, browsesession/, warmpool/) and is added here as it is built.
import type { Manager } from '../runtime/manager.ts';

export interface ControllerSettings {
  workers: number;
}

export function registerControllers(manager: Manager, settings: ControllerSettings): void {
  void manager;
  void settings;
}
