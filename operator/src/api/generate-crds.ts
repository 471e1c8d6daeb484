// Writes crds/*.yaml from the TypeScript source (`npm run gen:crds`), or with --check exits 1 when
// the committed files differ from what the source renders.
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderCrdFiles } from './crd-files.ts';

const dir = join(import.meta.dirname, '..', '..', '..', 'crds');
const check = process.argv.includes('--check');
const wanted = renderCrdFiles();
const present = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
const stale = [
  ...[...wanted]
    .filter(([file, text]) => !present.includes(file) || readFileSync(join(dir, file), 'utf8') !== text)
    .map(([f]) => f),
  ...present.filter((file) => !wanted.has(file)),
];
if (check) {
  if (stale.length > 0) {
    console.error(`crds/ is stale (${stale.join(', ')}): run \`npm run gen:crds\` and commit the result`);
    process.exit(1);
  }
  console.log(`crds/ is up to date (${wanted.size} files)`);
} else {
  for (const file of present) if (!wanted.has(file)) rmSync(join(dir, file));
  for (const [file, text] of wanted) writeFileSync(join(dir, file), text);
  console.log(`wrote ${[...wanted.keys()].map((f) => `crds/${f}`).join(', ')}`);
}
