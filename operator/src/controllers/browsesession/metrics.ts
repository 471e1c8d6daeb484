// What an operator of codebrowse watches on a dashboard: sessions by phase, how long apply → Ready
// takes, warm VMs ready per image, and how often a claim found a warm VM.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { BrowseSession, ServerPool } from '../../api/objects.ts';
import type { Informer } from '../../runtime/informer.ts';

export interface SessionMetrics {
  ready(session: BrowseSession): void;
  claim(kind: 'warm' | 'cold'): void;
}

export function sessionMetrics(
  registry: Registry,
  sessions: () => Informer<BrowseSession>,
  pools: () => Informer<ServerPool>,
): SessionMetrics {
  new Gauge({
    name: 'codebrowse_sessions',
    help: 'BrowseSessions by phase.',
    labelNames: ['phase'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const session of sessions().list()) this.inc({ phase: session.status?.phase ?? 'Pending' });
    },
  });
  new Gauge({
    name: 'codebrowse_warm_vms_ready',
    help: 'Warm VMs ready to be claimed, per pool and image.',
    labelNames: ['pool', 'image'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const pool of pools().list())
        for (const warm of pool.status?.warm ?? [])
          this.set({ pool: pool.metadata.name!, image: warm.image }, warm.ready);
    },
  });
  const timeToReady = new Histogram({
    name: 'codebrowse_session_time_to_ready_seconds',
    help: 'From the creation of a session to Ready.',
    buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
    registers: [registry],
  });
  const claims = new Counter({
    name: 'codebrowse_vm_claims_total',
    help: 'VMs given to sessions: warm (claimed, pre-booted) or cold (cloned on demand).',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  return {
    ready(session) {
      const created = Date.parse(session.metadata.creationTimestamp ?? '');
      if (!Number.isNaN(created)) timeToReady.observe((Date.now() - created) / 1000);
    },
    claim(kind) {
      claims.inc({ kind });
    },
  };
}
