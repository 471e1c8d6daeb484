// Session figures with real VMs (issue 24): `make dev`'s set-up with the QEMU VM host (KubeVirt's
// virt-api and virt-controller, the operator, downloader, portal and VM host as processes; software
// emulation where KVM does not work) and the compiled guest agent in the Linux image. Each run
// applies a BrowseSession naming a 10 MB tarball with a configure script and a .deb, served on
// loopback, and measures:
//   - apply → Ready (Installed) for a warm claim (a paused warm VM unpaused) and for a cold VM
//     (cloned from the golden snapshot and booted), p50 and p95 of RUNS each, and warm / cold;
//   - Ready → the first ssh command answering (from the hosts' LAN, with the session's password);
//   - the agent's own steps (its done message: each step's ms), and the package's own build.
// KubeVirt has no memory-snapshot restore (a VM's memory state is not part of a
// VirtualMachineSnapshot), so there is no such figure: a paused warm VM is KubeVirt's way.
// Run: make bench-vm   (BENCH_RUNS, default 5; BENCH_KINDS=warm,cold; BENCH_KEEP=1 keeps the dev dir)
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BrowseSession, ServerPool } from '../../operator/src/api/objects.ts';
import type { Condition } from '../../operator/src/runtime/conditions.ts';
import { Resources } from '../../operator/src/runtime/resources.ts';
import { type Secret, type VirtualMachine, loginSecretName } from '../../operator/src/vm/builders.ts';
import { TestServer } from '../../operator/test/fetch/servers.ts';
import { clientFor, eventually } from '../../operator/test/runtime/harness.ts';
import { REPO_ROOT } from '../../e2e/cluster/install.ts';
import { deb, tarGz } from '../../e2e/guest/packages.ts';

const run = promisify(execFile);
const RUNS = Number(process.env['BENCH_RUNS'] ?? 5);
const CLI = join(REPO_ROOT, 'e2e', 'cluster', 'cli.ts');
const MINUTE = 60_000;
const VMS = 'codebrowse-vms';
const dir = await mkdtemp(join(tmpdir(), 'codebrowse-session-bench-'));
const netns = `cbsb-${process.pid}`;
const lanNetns = `${netns}-lan`;
const env = {
  ...process.env,
  CODEBROWSE_DEV_DIR: dir,
  CODEBROWSE_DEV_VMS: 'qemu',
  CODEBROWSE_DEV_NETNS: netns,
  CODEBROWSE_DEV_SESSION: '0',
};

// A 10 MB tarball (incompressible, so 10 MB on the wire) whose configure writes a Makefile, and a .deb.
const files = new Map<string, Buffer>([
  [
    '/releases/big-1.0.tar.gz',
    tarGz([
      { name: 'big-1.0/', type: 'dir' },
      {
        name: 'big-1.0/configure',
        mode: 0o755,
        body: "#!/bin/sh\nprintf 'all:\\n\\tcp data.bin data.out\\ninstall:\\n\\tinstall -D -m 0644 data.out /usr/local/share/big/data\\n' > Makefile\n",
      },
      { name: 'big-1.0/data.bin', body: randomBytes(10 * 1024 * 1024) },
    ]),
  ],
  [
    '/pool/codebrowse-hello_1.0_all.deb',
    await deb('codebrowse-hello', '1.0', { 'usr/share/codebrowse-hello/hello.txt': 'hello\n' }),
  ],
]);
const packages = await new TestServer((req, res) => {
  const body = files.get(req.url ?? '');
  if (body) res.writeHead(200, { 'content-length': String(body.length) }).end(body);
  else res.writeHead(404).end();
}).listen('127.0.0.1');

interface Figures {
  ready: number;
  ssh: number;
  steps: Map<string, number>;
  /** Seconds from apply to when each phase and each True condition was first seen. */
  timeline: Map<string, number>;
}

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.ceil(q * xs.length) - 1]!;
const fmt = (xs: number[], digits = 1) =>
  `p50 ${quantile(xs, 0.5).toFixed(digits)} s, p95 ${quantile(xs, 0.95).toFixed(digits)} s (${xs.map((x) => x.toFixed(digits)).join(', ')})`;

/** The agent's setup steps ("address: ... (123 ms)") in its done message, and claim → done. */
function stepsOf(message: string): Map<string, number> {
  const steps = new Map<string, number>();
  const step = /(?:^|[.;] )(clock|hostname|address|user|sudo|ssh|telnet|vnc): .*?\((\d+) ms\)/g;
  for (const m of message.matchAll(step)) steps.set(m[1]!, Number(m[2]));
  const total = /(\d+) ms from the claim to done/.exec(message);
  if (total) {
    const setup = [...steps.values()].reduce((a, b) => a + b, 0);
    steps.set('packages (the rest)', Number(total[1]) - setup);
    steps.set('claim → done', Number(total[1]));
  }
  return steps;
}

/** An askpass program that answers PASSWORD, for ssh without a terminal (written once per session). */
async function askpassFor(user: string, password: string): Promise<string> {
  const askpass = join(dir, `askpass-${user}.sh`);
  await writeFile(askpass, `#!/bin/sh\nprintf '%s\\n' '${password.replace(/'/g, '')}'\n`);
  await chmod(askpass, 0o700);
  return askpass;
}

async function sshAnswers(user: string, ip: string, askpass: string): Promise<boolean> {
  try {
    const { stdout } = await run(
      'ip',
      [
        ...['netns', 'exec', lanNetns, 'ssh'],
        ...['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'PubkeyAuthentication=no'],
        ...['-o', 'ConnectTimeout=5', '-o', 'LogLevel=ERROR', `${user}@${ip}`, 'echo answered'],
      ],
      { env: { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: 'none' }, timeout: 15_000 },
    );
    return stdout.trim() === 'answered';
  } catch {
    return false;
  }
}

const client = await (async () => {
  console.error(`session bench: make dev with QEMU in ${dir} (a cold start builds the image first)`);
  await run(process.execPath, [CLI, 'dev'], { env, timeout: 25 * MINUTE, maxBuffer: 1 << 24 });
  return clientFor(join(dir, 'kubeconfig'));
})();

async function setWarm(count: number): Promise<void> {
  const pool = (await client.get<ServerPool>(Resources.ServerPool, 'default'))!;
  const images = pool.spec.images.map((i) => (i.name === 'debian-12' ? { ...i, warm: count } : i));
  await client.mergePatch(Resources.ServerPool, 'default', undefined, { spec: { images } });
  if (count === 0)
    await eventually(
      'no warm VM left',
      async () =>
        (await client.list<VirtualMachine>(Resources.VirtualMachine, VMS)).items.every(
          (vm) => vm.metadata.labels?.['codebrowse.io/warm'] !== 'true',
        ),
      5 * MINUTE,
      2000,
    );
}

/** One session from apply to its first ssh command, then deleted (and its VM gone). */
async function oneSession(name: string, kind: 'warm' | 'cold'): Promise<Figures> {
  if (kind === 'warm')
    await eventually(
      'a warm VM paused',
      async () =>
        (await client.list<VirtualMachine>(Resources.VirtualMachine, VMS)).items.some(
          (vm) => vm.metadata.labels?.['codebrowse.io/warm'] === 'true' && vm.status?.printableStatus === 'Paused',
        ),
      15 * MINUTE,
      1000,
    );
  const applied = Date.now();
  await client.create(Resources.BrowseSession, {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'BrowseSession',
    metadata: { name, namespace: 'default' },
    spec: {
      user: name,
      email: `${name}@example.org`,
      pool: 'default',
      os: 'linux',
      duration: '30m',
      packages: [
        { url: packages.url('/releases/big-1.0.tar.gz') },
        { url: packages.url('/pool/codebrowse-hello_1.0_all.deb') },
      ],
    },
  });
  const timeline = new Map<string, number>();
  const seen = (what: string) => {
    if (!timeline.has(what)) timeline.set(what, (Date.now() - applied) / 1000);
  };
  const session = await eventually(
    `${name} Ready`,
    async () => {
      const s = await client.get<BrowseSession>(Resources.BrowseSession, name, 'default');
      if (s?.status?.phase) seen(`phase ${s.status.phase}`);
      for (const c of (s?.status?.conditions as Condition[] | undefined) ?? []) if (c.status === 'True') seen(c.type);
      if (s?.status?.phase === 'Failed') throw new Error(`${name} failed: ${JSON.stringify(s.status?.conditions)}`);
      const installed = (s?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === 'Installed');
      return s?.status?.phase === 'Ready' && installed?.status === 'True' ? s : undefined;
    },
    20 * MINUTE,
    250,
  );
  const readyAt = Date.now();
  if (kind === 'warm' && !session.status!.vm!.startsWith('warm-'))
    throw new Error(`${name} was to claim a warm VM, got ${session.status!.vm}`);
  const login = await client.get<Secret>(Resources.Secret, loginSecretName(session), VMS);
  const password = Buffer.from(login!.data!.password!, 'base64').toString('utf8');
  const askpass = await askpassFor(name, password);
  await eventually('ssh answers', () => sshAnswers(name, session.status!.ip!, askpass), 5 * MINUTE, 100);
  const sshAt = Date.now();
  const message = (session.status!.conditions as Condition[]).find((c) => c.type === 'Installed')!.message;
  await client.delete(Resources.BrowseSession, name, 'default');
  await eventually(
    `${name}'s VM gone`,
    async () => !(await client.get(Resources.VirtualMachine, session.status!.vm!, VMS)),
    5 * MINUTE,
    1000,
  );
  return { ready: (readyAt - applied) / 1000, ssh: (sshAt - readyAt) / 1000, steps: stepsOf(message), timeline };
}

const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
const results: Record<'warm' | 'cold', Figures[]> = { warm: [], cold: [] };
try {
  // Warm first (the dev pool keeps one warm VM under QEMU), then cold (no warm VM).
  const kinds = (process.env['BENCH_KINDS'] ?? 'warm,cold').split(',');
  if (kinds.includes('warm')) for (let i = 0; i < RUNS; i++) results.warm.push(await oneSession(`warm${i}`, 'warm'));
  if (kinds.includes('cold')) {
    await setWarm(0);
    for (let i = 0; i < RUNS; i++) results.cold.push(await oneSession(`cold${i}`, 'cold'));
  }
} finally {
  console.log(
    `\nsession bench on ${commit}: QEMU (software emulation), 1 vCPU, 1 GiB; a 10 MB tarball with configure + a .deb`,
  );
  for (const kind of ['warm', 'cold'] as const) {
    const runs = results[kind];
    if (!runs.length) continue;
    console.log(`${kind}: apply → Ready/Installed  ${fmt(runs.map((r) => r.ready))}`);
    console.log(
      `${kind}: Ready → first ssh command ${fmt(
        runs.map((r) => r.ssh),
        2,
      )}`,
    );
    const seen = [...new Set(runs.flatMap((r) => [...r.timeline.keys()]))];
    for (const what of seen) {
      const at = runs.map((r) => r.timeline.get(what)).filter((v): v is number => v !== undefined);
      console.log(`${kind}:   apply → ${what.padEnd(22)} ${fmt(at)}`);
    }
    const names = [...new Set(runs.flatMap((r) => [...r.steps.keys()]))];
    for (const step of names) {
      const ms = runs.map((r) => r.steps.get(step)).filter((v): v is number => v !== undefined);
      console.log(
        `${kind}:   agent step ${step.padEnd(24)} ${fmt(
          ms.map((v) => v / 1000),
          2,
        )}`,
      );
    }
  }
  if (results.warm.length && results.cold.length) {
    const ratio =
      quantile(
        results.warm.map((r) => r.ready),
        0.5,
      ) /
      quantile(
        results.cold.map((r) => r.ready),
        0.5,
      );
    console.log(`ratio warm / cold (p50 apply → Ready): ${ratio.toFixed(3)}`);
  }
  await run(process.execPath, [CLI, 'down'], { env, timeout: 3 * MINUTE }).catch(() => undefined);
  await packages.close();
  if (process.env['BENCH_KEEP'] === '1') console.log(`kept ${dir}`);
  else await rm(dir, { recursive: true, force: true });
}
process.exit(0);
