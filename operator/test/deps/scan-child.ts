// Runs findSpecFile, as the downloader does, on each archive named in argv[3..] ("path name" pairs)
// with the scan limits of argv[2] (JSON), one after the other, and prints one JSON line per archive;
// then waits a moment (an unhandled 'error' event comes late) and prints DONE. A crash of this
// process is what took the downloaders down.
import { setTimeout as sleep } from 'node:timers/promises';
import { SCAN_LIMITS, findSpecFile } from '../../src/deps/archive.ts';

Object.assign(SCAN_LIMITS, JSON.parse(process.argv[2]!));
for (const pair of process.argv.slice(3)) {
  const [path, name] = pair.split(' ') as [string, string];
  try {
    const found = await findSpecFile(path, name);
    console.log(JSON.stringify({ name, found: found?.path ?? null }));
  } catch (error) {
    console.log(JSON.stringify({ name, error: (error as Error).constructor.name, message: (error as Error).message }));
  }
}
await sleep(300);
console.log('DONE');
