import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Type from 'typebox';
import { buildCustomResourceDefinition, checkSchema } from '../../src/api/crd.ts';
import { renderCrdFiles } from '../../src/api/crd-files.ts';
import { serverPoolKind } from '../../src/api/serverpool.ts';

const CRD_DIR = join(import.meta.dirname, '..', '..', '..', 'crds');

describe('generated CRDs', () => {
  it('crds/ holds exactly what operator/src/api renders (run `npm run gen:crds` when this fails)', () => {
    for (const [file, text] of renderCrdFiles()) {
      expect({ file, text: readFileSync(join(CRD_DIR, file), 'utf8') }).toEqual({ file, text });
    }
  });

  it('every kind gets a status subresource, short names, the codebrowse category and printer columns', () => {
    const crd = buildCustomResourceDefinition(serverPoolKind) as {
      spec: {
        names: { shortNames: string[]; categories: string[] };
        versions: { subresources: object; additionalPrinterColumns: { name: string }[] }[];
      };
    };
    expect(crd.spec.names.categories).toEqual(['codebrowse']);
    expect(crd.spec.names.shortNames).toContain('pool');
    expect(crd.spec.versions[0]!.subresources).toEqual({ status: {} });
    expect(crd.spec.versions[0]!.additionalPrinterColumns.map((c) => c.name)).toEqual(
      expect.arrayContaining(['Nodes', 'Capacity', 'Used', 'Free', 'Age']),
    );
  });
});

describe('schema check', () => {
  it('refuses a field without a description, naming it', () => {
    const schema = JSON.parse(JSON.stringify(Type.Object({ size: Type.Integer() }, { description: 'x' })));
    expect(() => checkSchema(schema, 'Thing')).toThrow('Thing.size: every field needs a description');
  });

  it('refuses keywords a structural schema cannot have, such as a union', () => {
    const schema = JSON.parse(
      JSON.stringify(
        Type.Object({ v: Type.Union([Type.String(), Type.Integer()], { description: 'v' }) }, { description: 'x' }),
      ),
    );
    expect(() => checkSchema(schema, 'Thing')).toThrow(/Thing\.v: "anyOf" is not allowed/);
  });

  it('refuses a map-typed list whose key is optional', () => {
    const schema = JSON.parse(
      JSON.stringify({
        type: 'array',
        'x-kubernetes-list-type': 'map',
        'x-kubernetes-list-map-keys': ['name'],
        items: Type.Object({ name: Type.Optional(Type.String({ description: 'n' })) }),
      }),
    );
    expect(() => checkSchema(schema, 'list')).toThrow('list: list map key name must be a required field');
  });
});
