import type { Cluster } from './cluster.ts';

export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __cluster?: Cluster }).__cluster?.plane.stop();
  // `make test` runs jest with --forceExit, so a handle a test left open cannot hold CI until its
  // time runs out (it did once). Without it (a jest run by hand), say what holds the process.
  setTimeout(() => {
    const held = process.getActiveResourcesInfo().filter((r) => r !== 'TTYWrap');
    process.stderr.write(`jest still running 10 s after the tests ended; open: ${held.join(', ')}\n`);
  }, 10_000).unref();
}
