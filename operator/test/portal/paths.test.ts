// Paths that mean one thing to a proxy and another to the portal: a backslash or an encoded dot
// segment that URL parsing resolves (/sessions/..\agent\v1\manifest became /agent/v1/manifest,
// /sessions/%2e%2e/metrics became /metrics), so a proxy that publishes only /sessions/ would have
// published the agent API and the metrics. The portal refuses them (issue 21, part 6).
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { request } from 'node:http';
import { testKubeconfigPath } from '../../../e2e/cluster/test-env.ts';
import { isCanonical } from '../../src/portal/server.ts';
import { type World, startWorld } from '../controllers/world.ts';
import { clientFor } from '../runtime/harness.ts';

let world: World;
beforeAll(async () => {
  world = await startWorld(clientFor(testKubeconfigPath()));
});
afterAll(async () => {
  await world.stop();
});

/** The status of a GET of `path` exactly as written (fetch would normalise it first). */
function statusOf(path: string): Promise<number> {
  const { hostname, port } = new URL(world.portalUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode!);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the portal', () => {
  it.each([
    '/sessions/..\\agent\\v1\\manifest',
    '/sessions/%2e%2e/metrics',
    '/sessions/%2E%2E/agent/v1/manifest',
    '/sessions/../healthz',
    '/sessions/.%2e/healthz',
    '/sessions/x%2f..%2f..%2fagent/v1/manifest',
    '/sessions/x%5cagent',
    '//agent/v1/manifest',
  ])('refuses %s with 400, before any handler', async (path) => {
    expect(await statusOf(path)).toBe(400);
  });

  it('answers canonical paths as before', async () => {
    expect(await statusOf('/healthz')).toBe(200);
    expect(await statusOf('/agent/v1/manifest')).toBe(401);
    expect(await statusOf('/sessions/lab/erin/not-a-token?x=..\\y')).toBe(404);
    expect(isCanonical('/console/novnc/core/rfb.js')).toBe(true);
    expect(isCanonical('/cache?also=https%3A%2F%2Fexample.org%2F..%2Fa')).toBe(true);
  });
});
