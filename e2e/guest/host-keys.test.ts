// ssh host keys are the VM's own (issue 24): the session image carries none, and each VM's agent
// makes its own as soon as it has its settings — before its first poll, so a warm VM has them
// before it is claimed and the claim does not wait for them — never the same in two VMs of one
// image, and sshd accepts them.
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentApiStub } from './agent-api-stub.ts';
import { GuestRoot, testRootfs } from './rootfs.ts';

const IMAGE_SCRIPT = join(import.meta.dirname, '..', '..', 'vm-images', 'linux', 'image.sh');
const KEYS = ['/etc/ssh/ssh_host_ed25519_key', '/etc/ssh/ssh_host_ecdsa_key'];

let lower: string;
let stub: AgentApiStub;
const roots: GuestRoot[] = [];

beforeAll(async () => {
  lower = await testRootfs();
  stub = await AgentApiStub.start(); // never claims: the agents only wait
}, 20 * 60_000);

afterAll(async () => {
  await stub?.close();
  await Promise.all(roots.map((r) => r.dispose()));
});

test('the session image has no ssh host keys, and has the compiled agent', async () => {
  const image = execFileSync('sh', [IMAGE_SCRIPT], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
    .trim()
    .split('\n')
    .pop()!;
  const dir = await mkdtemp(join(tmpdir(), 'codebrowse-image-'));
  try {
    // The root file system starts 1 MiB into the disk (build-image.sh), read with e2fsprogs' debugfs.
    const raw = join(dir, 'disk.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', join(image, 'disk.qcow2'), raw]);
    const ls = (path: string) =>
      execFileSync('debugfs', ['-R', `ls -l ${path}`, `${raw}?offset=1048576`], { encoding: 'utf8', stdio: 'pipe' });
    const ssh = ls('/etc/ssh');
    expect(ssh).toContain('sshd_config'); // the listing worked
    expect(ssh).not.toContain('ssh_host_');
    expect(ls('/usr/local/lib/codebrowse-agent')).toMatch(/100755 .* codebrowse-agent\n/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 300_000);

test('two VMs of one image make their own host keys before their first poll, and sshd takes them', async () => {
  const lowerKeys = KEYS.map((k) => readFileSync(join(lower, `${k}.pub`), 'utf8'));
  const made: string[][] = [];
  for (let i = 0; i < 2; i++) {
    const root = await GuestRoot.create(lower);
    roots.push(root);
    // Not claimed: the agent waits for one poll and gives up (CODEBROWSE_MAX_POLLS).
    const run = await root.runAgent({
      portal: stub.url,
      token: stub.token,
      env: { CODEBROWSE_MAX_POLLS: '1', CODEBROWSE_POLL_SECONDS: '1' },
    });
    expect(run.stdout).toContain("made this VM's ssh host keys (ed25519, ecdsa)");
    expect(stub.polls).toBeGreaterThan(0);
    // In this order: keys, then the wait for a claim (the agent's log says each as it happens).
    const keysAt = run.stdout.indexOf("made this VM's ssh host keys");
    const waitAt = run.stdout.indexOf('waiting for the manifest');
    expect([keysAt >= 0, waitAt > keysAt]).toEqual([true, true]);
    made.push(await Promise.all(KEYS.map((k) => root.read(`${k}.pub`))));
    const modes = await root.exec(['stat', '-c', '%a %U', ...KEYS]);
    expect(modes.stdout).toBe('600 root\n600 root\n');
    expect(await root.exists('/etc/ssh/ssh_host_rsa_key')).toBe(false);
    // sshd's own test mode loads its configuration and every host key it names.
    const sshd = await root.exec(['sh', '-c', 'mkdir -p /run/sshd && /usr/sbin/sshd -t && echo sshd-ok']);
    expect(sshd.stdout + sshd.stderr).toContain('sshd-ok');
  }
  for (let k = 0; k < KEYS.length; k++) {
    expect(new Set([lowerKeys[k], made[0]![k], made[1]![k]]).size).toBe(3);
  }
}, 120_000);
