// The guest agent's Windows build (codebrowse-agent-windows-amd64.exe) run for real, as a Windows
// program under Wine (Debian's wine64, a fresh prefix for this file), against a stand-in of the
// portal's agent API on 127.0.0.1: what a session user would find on the C: drive after the
// claim, and what the portal is told. Real: the agent, Wine's msiexec and cmd, an MSI made by
// wixl, NSIS installers made by makensis, zips with install.bat. Played: the portal (the stub),
// and bcryptprimitives.dll, which Wine 8.0 lacks (windows-packages.ts). What Wine cannot show stays
// a contract (vm-images/README.md, "Windows"): Wine has no local accounts (its net.exe has no
// "user" command), so the sessions here set the test switch CODEBROWSE_SKIP_ACCOUNT=1, and the
// last test shows what the agent says without it.
import { readFile } from 'node:fs/promises';
import { AgentApiStub, type StubPackage } from './agent-api-stub.ts';
import { zip } from './packages.ts';
import {
  type WineRun,
  WinePrefix,
  bat,
  msi,
  nsis,
  processesWith,
  requireTools,
  windowsAgent,
} from './windows-packages.ts';

// Names the hostile zips try to write (none may exist afterwards), and the mark of the process a
// timed-out install leaves behind in the background (none may be running afterwards).
const EVIL = `evil-${Date.now().toString(36)}`;
const ORPHAN = `-n 87 127.0.0.${1 + (Date.now() % 200)}`;

let wine: WinePrefix;
let agent: string;
const stubs: AgentApiStub[] = [];

beforeAll(async () => {
  requireTools();
  agent = windowsAgent();
  wine = await WinePrefix.create();
}, 300_000);

afterAll(async () => {
  await Promise.all(stubs.map((s) => s.close()));
  await wine?.dispose();
});

async function portal(): Promise<AgentApiStub> {
  const stub = await AgentApiStub.start();
  stubs.push(stub);
  return stub;
}

/** The agent, started as the scheduled task starts it: no arguments, its settings in the environment. */
function runAgent(stub: AgentApiStub, env: Record<string, string> = {}): Promise<WineRun> {
  return wine.run(
    [agent],
    {
      CODEBROWSE_PORTAL_URL: stub.url,
      CODEBROWSE_AGENT_TOKEN: stub.token,
      CODEBROWSE_SET_CLOCK: '0',
      CODEBROWSE_MAX_POLLS: '5',
      CODEBROWSE_SKIP_ACCOUNT: '1',
      ...env,
    },
    240_000,
  );
}

function expectRan(run: WineRun): void {
  if (run.code !== 0) throw new Error(`the agent exited ${run.code}:\n${run.stdout}\n${run.stderr}`);
}

const report = (stub: AgentApiStub, index: number) => {
  const found = stub.reports.find((r) => r.package === index);
  if (!found) throw new Error(`no report for package ${index}; reports: ${JSON.stringify(stub.reports)}`);
  return found;
};

describe('a session with an MSI, an NSIS installer and a zip with install.bat', () => {
  let stub: AgentApiStub;
  let first: WineRun;

  beforeAll(async () => {
    stub = await portal();
    stub.claim({
      session: 'team-w/alice-1',
      hostname: 'alice-win.sessions.example.org',
      user: 'alice',
      password: 'S3cret-pass!',
      packages: [
        {
          url: 'https://downloads.example.org/hello-1.0.msi',
          body: await msi({
            product: 'codebrowse hello',
            dir: 'codebrowse-hello',
            files: { 'hello.txt': 'hello from an MSI\r\n' },
          }),
        },
        {
          url: 'https://downloads.example.org/tool-setup.exe',
          body: await nsis(
            'codebrowse tool',
            [
              'SetOutPath "$PROGRAMFILES64\\codebrowse-tool"',
              'FileOpen $0 "$PROGRAMFILES64\\codebrowse-tool\\tool.txt" w',
              'FileWrite $0 "hello from NSIS"',
              'FileClose $0',
            ].join('\n'),
          ),
        },
        {
          url: 'https://downloads.example.org/app.zip',
          body: zip([
            { name: 'app/' },
            { name: 'app/README.txt', body: 'the app\r\n' },
            {
              name: 'app/install.bat',
              // Manifest order, seen on disk: the MSI and the NSIS installer ran before it.
              body: bat(
                'echo installing the app from %CD%',
                'if not exist "%ProgramFiles%\\codebrowse-hello\\hello.txt" (echo the MSI has not run & exit /b 3)',
                'if not exist "%ProgramFiles%\\codebrowse-tool\\tool.txt" (echo the NSIS installer has not run & exit /b 4)',
                'mkdir "%ProgramFiles%\\codebrowse-app"',
                'copy README.txt "%ProgramFiles%\\codebrowse-app\\README.txt" >nul',
                'echo app installed',
              ),
            },
          ]),
        },
      ],
    });
    first = await runAgent(stub);
    expectRan(first);
  }, 300_000);

  test('each package is installed silently, in manifest order, and reported with exit code 0', () => {
    expect(stub.rejected).toEqual([]);
    expect(stub.reports.map((r) => [r.package, r.installed, r.exitCode])).toEqual([
      [0, true, 0],
      [1, true, 0],
      [2, true, 0],
    ]);
    expect(stub.done).toEqual([{ installed: true, message: expect.stringMatching(/^all is well: 3 of 3 packages/) }]);
  });

  test('their files are on the C: drive', async () => {
    await expect(readFile(wine.drive('Program Files', 'codebrowse-hello', 'hello.txt'), 'utf8')).resolves.toBe(
      'hello from an MSI\r\n',
    );
    await expect(readFile(wine.drive('Program Files', 'codebrowse-tool', 'tool.txt'), 'utf8')).resolves.toBe(
      'hello from NSIS',
    );
    await expect(readFile(wine.drive('Program Files', 'codebrowse-app', 'README.txt'), 'utf8')).resolves.toBe(
      'the app\r\n',
    );
    // The zip is unpacked into the user's profile, its only directory being where install.bat ran.
    await expect(readFile(wine.drive('users', 'alice', 'app', 'app', 'install.bat'), 'utf8')).resolves.toContain(
      'echo app installed',
    );
  });

  test('the reports carry what ran and its output', () => {
    expect(report(stub, 0).message).toMatch(/msiexec\.exe \/i \S+hello-1\.0\.msi \/qn \/norestart/);
    // The end of msiexec's own log, without its property dumps.
    expect(report(stub, 0).message).toContain('InstallFinalize');
    expect(report(stub, 0).message).not.toContain('Property(S)');
    expect(report(stub, 1).message).toMatch(/tool-setup\.exe \/S\n/);
    expect(report(stub, 2).message).toContain('installing the app from C:\\Users\\alice\\app\\app');
    expect(report(stub, 2).message).toContain('app installed');
  });

  test('the setup steps that cannot work under Wine do not fail the session, and say so', () => {
    const message = stub.done[0]?.message ?? '';
    expect(message).toContain('hostname: alice-win (takes effect at the next restart');
    expect(message).toContain('user: alice not made: CODEBROWSE_SKIP_ACCOUNT=1 (a test switch)');
    expect(message).toContain('ssh: no OpenSSH Server on this image');
    expect(message).toContain('vnc: no VNC server in the image');
    expect(first.stdout).toContain('reported done (installed: true)');
  });

  test('the state and the log are under %ProgramData%', async () => {
    const log = await readFile(wine.drive('ProgramData', 'codebrowse-agent', 'agent.log'), 'utf8');
    expect(log).toContain('claimed by session team-w/alice-1');
    expect(log).toContain('package 2: installed=true (0) install.bat exited 0');
  });

  test('a second run installs nothing twice and reports nothing again', async () => {
    stub.clearReports();
    const again = await runAgent(stub);
    expectRan(again);
    expect(stub.downloads).toEqual([]);
    expect(stub.reports).toEqual([]);
    expect(stub.done).toEqual([]);
    expect(again.stdout).toContain('done was reported before');
  }, 300_000);
});

describe('failing installers and hostile zips', () => {
  const HOSTILE: { name: string; rule: string; body: Buffer }[] = [
    { name: 'dotdot.zip', rule: 'parent-dir', body: zip([{ name: 'ok.txt' }, { name: `../${EVIL}.txt` }]) },
    { name: 'backslash.zip', rule: 'parent-dir', body: zip([{ name: 'ok.txt' }, { name: `..\\${EVIL}.txt` }]) },
    { name: 'drive.zip', rule: 'absolute-path', body: zip([{ name: `C:\\${EVIL}.txt` }]) },
    { name: 'rooted.zip', rule: 'absolute-path', body: zip([{ name: `/${EVIL}.txt` }]) },
    {
      name: 'link.zip',
      rule: 'absolute-link',
      body: zip([{ name: 'win', symlink: true, body: '/windows' }, { name: `win/${EVIL}.txt` }]),
    },
  ];
  let stub: AgentApiStub;
  let packages: StubPackage[];
  let run: WineRun;

  beforeAll(async () => {
    stub = await portal();
    packages = [
      {
        url: 'https://downloads.example.org/broken-setup.exe',
        body: await nsis('codebrowse broken', ['DetailPrint "giving up"', 'SetErrorLevel 7', 'Quit'].join('\n')),
      },
      {
        url: 'https://downloads.example.org/refused.msi',
        body: await msi({
          product: 'codebrowse refused',
          dir: 'codebrowse-refused',
          files: { 'never.txt': 'never installed' },
          refuse: 'this package refuses to install',
        }),
      },
      {
        url: 'https://downloads.example.org/broken.zip',
        body: zip([
          { name: 'install.bat', body: bat('echo looking for the SDK', 'echo no SDK found 1>&2', 'exit /b 5') },
        ]),
      },
      {
        url: 'https://downloads.example.org/slow.zip',
        body: zip([
          {
            name: 'install.bat',
            body: bat(
              'echo starting a helper and waiting',
              `start /b cmd /c "ping ${ORPHAN} >nul"`,
              'ping -n 60 127.0.0.1 >nul',
              'echo never printed',
            ),
          },
        ]),
      },
      ...HOSTILE.map((h) => ({ url: `https://downloads.example.org/${h.name}`, body: h.body })),
    ];
    stub.claim({ session: 'team-w/mallory-1', user: 'mallory', password: 'pw', packages });
    run = await runAgent(stub, { CODEBROWSE_INSTALL_TIMEOUT: '3' });
    expectRan(run);
  }, 300_000);

  test('every package is reported, in manifest order, and none as installed', () => {
    expect(stub.rejected).toEqual([]);
    expect(stub.reports.map((r) => [r.package, r.installed])).toEqual(packages.map((_, i) => [i, false]));
    expect(stub.done).toEqual([
      {
        installed: false,
        message: expect.stringMatching(/^0 of 9 packages installed; failed: 0, 1, 2, 3, 4, 5, 6, 7, 8\. /),
      },
    ]);
  });

  test('a failing installer is reported with its exit code and output', () => {
    expect(report(stub, 0)).toMatchObject({ exitCode: 7, message: expect.stringMatching(/broken-setup\.exe \/S\n/) });
    // msiexec's 1603 (fatal error), with the end of its log.
    expect(report(stub, 1)).toMatchObject({ exitCode: 1603, message: expect.stringContaining('LaunchConditions') });
    expect(report(stub, 2)).toMatchObject({
      exitCode: 5,
      message: expect.stringMatching(/looking for the SDK\r\nno SDK found/),
    });
  });

  test('an install that runs past the timeout is stopped, with every process it started', async () => {
    expect(report(stub, 3)).toMatchObject({
      exitCode: -1,
      message: expect.stringContaining(
        'starting a helper and waiting\r\n(stopped after 3 s: CODEBROWSE_INSTALL_TIMEOUT)',
      ),
    });
    expect(report(stub, 3).message).not.toContain('never printed');
    expect(await processesWith(ORPHAN)).toEqual([]);
  });

  test('hostile zips are refused by the same archive rules as on Linux, and nothing gets out', async () => {
    HOSTILE.forEach((h, i) => {
      const r = report(stub, 4 + i);
      expect([h.name, r.exitCode, r.message]).toEqual([
        h.name,
        undefined,
        expect.stringContaining(`refused by the archive rule ${h.rule}:`),
      ]);
    });
    expect(await wine.find(EVIL, wine.dir)).toEqual([]);
    // A refusal removes what was unpacked; the zip itself waits on the Desktop with its note.
    expect(await wine.find('dotdot', wine.drive('users', 'mallory'))).toEqual([
      wine.drive('users', 'mallory', 'Desktop', 'dotdot.zip'),
      wine.drive('users', 'mallory', 'Desktop', 'dotdot.zip.codebrowse-note.txt'),
    ]);
  });

  test('what failed is left on the Desktop with a note saying why', async () => {
    const note = await readFile(
      wine.drive('users', 'mallory', 'Desktop', 'broken-setup.exe.codebrowse-note.txt'),
      'utf8',
    );
    expect(note).toContain('codebrowse could not install broken-setup.exe');
    expect(note).toContain('why:    broken-setup.exe /S exited 7');
    await expect(readFile(wine.drive('users', 'mallory', 'Desktop', 'broken-setup.exe'))).resolves.toEqual(
      packages[0]!.body,
    );
  });
});

describe('without the test switch', () => {
  test('Wine makes no account, and the agent says so instead of installing for nobody', async () => {
    const stub = await portal();
    stub.claim({
      session: 'team-w/bob-1',
      user: 'bob',
      password: 'pw',
      packages: [
        {
          url: 'https://downloads.example.org/hello-1.0.msi',
          body: await msi({ product: 'codebrowse bob', dir: 'codebrowse-bob', files: { 'bob.txt': 'bob' } }),
        },
      ],
    });
    const run = await runAgent(stub, { CODEBROWSE_SKIP_ACCOUNT: '' });
    expectRan(run);
    expect(stub.downloads).toEqual([]);
    expect(stub.reports).toEqual([
      { package: 0, installed: false, message: 'not installed: the session user could not be set up\n' },
    ]);
    expect(stub.done).toEqual([
      {
        installed: false,
        message: expect.stringMatching(
          /^0 of 1 packages installed; failed: 0; a setup step failed\. .*user: creating bob failed: net exited 0 but Windows knows no such account/,
        ),
      },
    ]);
  }, 300_000);
});
