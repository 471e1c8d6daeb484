// The committed crds/*.yaml: what they should hold, rendered from operator/src/api.
import { stringify } from 'yaml';
import { buildCustomResourceDefinition } from './crd.ts';
import { KINDS } from './kinds.ts';
import { GROUP } from './schema.ts';

const HEADER = '# Generated from operator/src/api by `npm run gen:crds`. Do not edit by hand.\n';

/** File name (under crds/) and content of every generated CRD. */
export function renderCrdFiles(): Map<string, string> {
  const files = new Map<string, string>();
  for (const kind of KINDS) {
    const crd = buildCustomResourceDefinition(kind);
    files.set(`${GROUP}_${kind.plural}.yaml`, HEADER + stringify(crd, { lineWidth: 0 }));
  }
  return files;
}
