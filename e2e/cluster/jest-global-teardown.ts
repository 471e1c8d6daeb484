import type { Cluster } from './cluster.ts';

export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __cluster?: Cluster }).__cluster?.plane.stop();
}
