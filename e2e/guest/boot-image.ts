// Boots the Linux session image (make image-linux-recipe) under QEMU, as KubeVirt would start a
// session VM: from its own disk, with a NoCloud disk (label cidata) whose user data is what the
// operator's agent Secret carries, and user networking whose 10.0.2.2 is this machine's loopback,
// where a stand-in portal serves a session with a .deb and a tarball. Passes (exit 0) when the
// agent in the VM reports both installed and "all is well". Not a jest test: a boot under software
// emulation takes about a minute.
// Usage: node e2e/guest/boot-image.ts [IMAGE_DIR]   (default ~/.cache/codebrowse/image-linux)
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentApiStub } from './agent-api-stub.ts';
import { deb, tarGz } from './packages.ts';

const image = process.argv[2] ?? join(homedir(), '.cache', 'codebrowse', 'image-linux');
const disk = ['disk.qcow2', 'disk.img'].map((f) => join(image, f)).find((f) => existsSync(f));
if (!disk) {
  console.error(`no disk.qcow2 or disk.img in ${image}: run make image-linux-recipe first`);
  process.exit(2);
}
const work = mkdtempSync(join(tmpdir(), 'codebrowse-boot-'));
const console_ = join(work, 'console.log');
const stub = await AgentApiStub.start();
stub.claim({
  session: 'boot/alice',
  hostname: 'alice.sessions.example.org',
  ip: '10.0.2.99',
  user: 'alice',
  password: 'a password',
  packages: [
    {
      url: 'https://example.org/hello_1.0_all.deb',
      body: await deb('codebrowse-hello', '1.0', { 'usr/share/hello/ok': 'ok\n' }),
    },
    {
      url: 'https://example.org/greet-1.0.tar.gz',
      body: tarGz([
        {
          name: 'greet-1.0/Makefile',
          body: 'all:\n\ttrue\ninstall:\n\tinstall -D -m 0644 Makefile /usr/local/share/greet/Makefile\n',
        },
      ]),
    },
  ],
});
// The same user data as operator/src/vm/builders.ts buildAgentSecret writes.
writeFileSync(
  join(work, 'user-data'),
  [
    '#cloud-config',
    'write_files:',
    '  - path: /etc/codebrowse/agent.env',
    "    permissions: '0600'",
    '    content: |',
    `      CODEBROWSE_PORTAL=http://10.0.2.2:${new URL(stub.url).port}`,
    `      CODEBROWSE_TOKEN=${stub.token}`,
  ].join('\n'),
);
writeFileSync(join(work, 'meta-data'), 'instance-id: boot-1\n');
const cidata = join(work, 'cidata.img');
execFileSync('mkfs.vfat', ['-n', 'CIDATA', '-C', cidata, '2048'], { stdio: 'ignore' });
execFileSync('mcopy', ['-i', cidata, join(work, 'user-data'), join(work, 'meta-data'), '::/']);

const started = Date.now();
const seconds = () => ((Date.now() - started) / 1000).toFixed(1);
const qemu = spawn(
  'qemu-system-x86_64',
  [
    ...['-m', '1024', '-smp', '2', '-snapshot', '-display', 'none', '-monitor', 'none'],
    ...['-drive', `file=${disk},if=virtio`, '-drive', `file=${cidata},if=virtio,format=raw`],
    ...['-netdev', 'user,id=n', '-device', 'virtio-net-pci,netdev=n', '-serial', `file:${console_}`],
  ],
  { stdio: 'ignore' },
);
let ok = false;
try {
  await stub.until(() => stub.polls > 0, "the agent's first poll", 300_000);
  console.log(`${seconds()} s: the agent polls the portal`);
  await stub.until(() => stub.done.length > 0, 'the done report', 300_000);
  console.log(`${seconds()} s: done: ${JSON.stringify(stub.done[0])}`);
  console.log(`reports: ${JSON.stringify(stub.reports.map((r) => [r.package, r.installed, r.exitCode]))}`);
  ok = stub.done[0]!.installed && stub.reports.every((r) => r.installed) && stub.rejected.length === 0;
} catch (error) {
  console.error(String(error));
} finally {
  qemu.kill('SIGKILL');
  await stub.close();
  const lines = readFileSync(console_, 'utf8').split('\n');
  console.log(lines.filter((l) => l.includes('codebrowse-agent')).join('\n'));
  rmSync(work, { recursive: true, force: true });
}
console.log(ok ? 'the image boots and its agent installs a session' : 'FAILED');
process.exit(ok ? 0 : 1);
