// Builds the CustomResourceDefinition of a kind from its TypeBox schemas, and refuses to build one
// whose schema the API server would reject or that leaves a field undocumented.
import { GROUP, type KindDefinition, VERSION } from './schema.ts';

type JsonSchema = { [key: string]: unknown };

// What a structural schema may say (apiextensions.k8s.io/v1), of what we use.
const ALLOWED_KEYS = new Set([
  'type',
  'format',
  'description',
  'properties',
  'required',
  'items',
  'additionalProperties',
  'enum',
  'default',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'minItems',
  'maxItems',
  'minProperties',
  'maxProperties',
  'pattern',
  'nullable',
  'x-kubernetes-validations',
  'x-kubernetes-int-or-string',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-list-type',
  'x-kubernetes-list-map-keys',
  'x-kubernetes-map-type',
  'x-kubernetes-embedded-resource',
]);

/** Throws with the path of the first node that is not structural or has no description. */
export function checkSchema(schema: JsonSchema, path: string): void {
  for (const key of Object.keys(schema)) {
    if (!ALLOWED_KEYS.has(key)) throw new Error(`${path}: "${key}" is not allowed in a structural CRD schema`);
  }
  const untyped =
    schema['x-kubernetes-int-or-string'] === true || schema['x-kubernetes-preserve-unknown-fields'] === true;
  if (typeof schema.type !== 'string' && !untyped) throw new Error(`${path}: every schema node needs a type`);
  const properties = schema.properties as Record<string, JsonSchema> | undefined;
  for (const [name, child] of Object.entries(properties ?? {})) {
    const childPath = `${path}.${name}`;
    if (childPath === `${rootOf(path)}.metadata`) continue;
    if (typeof child.description !== 'string' || child.description.trim() === '') {
      throw new Error(`${childPath}: every field needs a description`);
    }
    checkSchema(child, childPath);
  }
  for (const name of (schema.required as string[] | undefined) ?? []) {
    if (!properties?.[name]) throw new Error(`${path}: required field ${name} is not a property`);
  }
  if (schema.items) checkSchema(schema.items as JsonSchema, `${path}[]`);
  if (typeof schema.additionalProperties === 'object') {
    checkSchema(schema.additionalProperties as JsonSchema, `${path}{}`);
  }
  if (schema.type === 'array' && schema['x-kubernetes-list-type'] === 'map') {
    const item = schema.items as JsonSchema;
    const itemRequired = (item.required as string[] | undefined) ?? [];
    for (const key of (schema['x-kubernetes-list-map-keys'] as string[] | undefined) ?? []) {
      if (!itemRequired.includes(key)) throw new Error(`${path}: list map key ${key} must be a required field`);
    }
  }
}

function rootOf(path: string): string {
  return path.split(/[.[{]/, 1)[0]!;
}

function plainJson(schema: unknown): JsonSchema {
  // TypeBox marks schemas with symbol keys; the API server wants plain JSON.
  return JSON.parse(JSON.stringify(schema)) as JsonSchema;
}

export function crdName(kind: KindDefinition): string {
  return `${kind.plural}.${GROUP}`;
}

/** The CustomResourceDefinition of one kind, ready to apply or to write as YAML. */
export function buildCustomResourceDefinition(kind: KindDefinition): JsonSchema {
  const spec = plainJson(kind.spec);
  const status = plainJson(kind.status);
  const openAPIV3Schema: JsonSchema = {
    type: 'object',
    description: kind.description,
    required: ['spec'],
    properties: {
      apiVersion: {
        type: 'string',
        description: `APIVersion of this object: ${GROUP}/${VERSION}.`,
      },
      kind: { type: 'string', description: `Kind of this object: ${kind.kind}.` },
      // The API server allows no more than this for metadata, not even a description.
      metadata: { type: 'object' },
      spec,
      status,
    },
  };
  checkSchema(openAPIV3Schema, kind.kind);
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: crdName(kind),
      labels: { 'app.kubernetes.io/name': 'codebrowse', 'app.kubernetes.io/part-of': 'codebrowse' },
    },
    spec: {
      group: GROUP,
      names: {
        kind: kind.kind,
        listKind: `${kind.kind}List`,
        plural: kind.plural,
        singular: kind.singular,
        shortNames: kind.shortNames,
        categories: ['codebrowse'],
      },
      scope: kind.scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: kind.printerColumns.map(({ priority, ...column }) =>
            priority ? { ...column, priority } : column,
          ),
          schema: { openAPIV3Schema },
        },
      ],
    },
  };
}
