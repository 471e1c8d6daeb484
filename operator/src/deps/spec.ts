// A package's dependency spec: `codebrowse.yaml` at the top of the package (or inline in a session,
// spec.packages[].codebrowse): what it requires (other packages by URL or by cache entry, with an
// optional sha256), the OS and architecture it needs, and its install steps. Pure: YAML text in, a
// checked spec or an error naming the file, the line and the fix out.
import Type, { type Static } from 'typebox';
import { Value } from 'typebox/value';
import { LineCounter, type Node, isCollection, isMap, isNode, parseDocument } from 'yaml';
import { ARCHITECTURES, OPERATING_SYSTEMS } from '../api/serverpool.ts';

export const SPEC_FILE = 'codebrowse.yaml';
/** A spec larger than this is refused (it is a few lines). */
export const MAX_SPEC_BYTES = 64 * 1024;
export const MAX_REQUIRES = 32;
export const MAX_INSTALL_STEPS = 64;

const URL_PATTERN = '^(https?|ftp)://[^/?#@\\s]+([/?#][^\\s]*)?$';
const DIGEST_PATTERN = '^sha256:[0-9a-f]{64}$';

/** What each pattern means, for the error message (the key is the pattern). */
const PATTERN_HELP: Record<string, string> = {
  [URL_PATTERN]:
    'must be an http://, https:// or ftp:// URL with a host and without a user name or spaces, e.g. https://example.org/lib-1.0.tar.gz',
  [DIGEST_PATTERN]: 'must name a cache entry by its digest, "sha256:" and 64 lower-case hex digits',
  '^[0-9a-f]{64}$': 'must be 64 lower-case hex digits, as printed by sha256sum',
};

const oneOrMore = <const T extends readonly string[]>(values: T, what: string) =>
  Type.Union([Type.Enum([...values]), Type.Array(Type.Enum([...values]), { minItems: 1, maxItems: values.length })], {
    description: `${what}: one of ${values.join(', ')}, or a list of them`,
  });

export const Requirement = Type.Object(
  {
    url: Type.Optional(Type.String({ maxLength: 2048, pattern: URL_PATTERN, description: 'Where the package is.' })),
    cache: Type.Optional(
      Type.String({ maxLength: 71, pattern: DIGEST_PATTERN, description: 'A cache entry (sha256:<hex>).' }),
    ),
    sha256: Type.Optional(
      Type.String({ maxLength: 64, pattern: '^[0-9a-f]{64}$', description: 'Expected SHA-256 of the content.' }),
    ),
  },
  { additionalProperties: false, description: 'One required package: url or cache.' },
);

export const DependencySpec = Type.Object(
  {
    apiVersion: Type.Optional(Type.Literal('codebrowse.io/v1alpha1')),
    kind: Type.Optional(Type.Literal('PackageSpec')),
    requires: Type.Optional(
      Type.Array(Requirement, {
        maxItems: MAX_REQUIRES,
        description: 'Packages installed before this one (each may have its own codebrowse.yaml).',
      }),
    ),
    os: Type.Optional(oneOrMore(OPERATING_SYSTEMS, 'The operating systems it runs on')),
    arch: Type.Optional(oneOrMore(ARCHITECTURES, 'The CPU architectures it runs on')),
    install: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 4096 }), {
        maxItems: MAX_INSTALL_STEPS,
        description:
          'Shell commands run in order as root in the unpacked package instead of the install-by-suffix rules; the first that fails stops the install.',
      }),
    ),
  },
  { additionalProperties: false },
);

export type DependencySpec = Static<typeof DependencySpec>;

/** A requirement as the operator uses it: its identity, and where the spec said it. */
export interface NormalizedRequirement {
  url?: string;
  cache?: string;
  sha256?: string;
  /** Line of the entry in codebrowse.yaml (absent for an inline spec). */
  line?: number;
}

/** A checked spec, as the downloader writes it into a DownloadRequest's status. */
export interface PackageSpec {
  /** Where it came from: the path of codebrowse.yaml inside the package, or "inline". */
  source: string;
  requires: NormalizedRequirement[];
  os?: string[];
  arch?: string[];
  install?: string[];
}

export class SpecError extends Error {
  readonly line?: number;
  constructor(message: string, line?: number) {
    super(message);
    this.line = line;
  }
}

const FIELDS = Object.keys(DependencySpec.properties).join(', ');

/** JSON-pointer path ("/requires/0/url") as a field path ("requires[0].url"). */
function fieldPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

/** The YAML node at a JSON pointer, for its line. */
function nodeAt(root: unknown, pointer: string): Node | undefined {
  let node: unknown = root;
  let found: Node | undefined = isNode(root) ? root : undefined;
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (!isCollection(node)) break;
    const next = node.get(isMap(node) ? part : Number(part), true);
    if (!isNode(next)) break;
    node = next;
    found = next;
  }
  return found;
}

interface SchemaError {
  keyword: string;
  instancePath: string;
  schemaPath: string;
  params: Record<string, unknown>;
  message: string;
}

/** One message per failing field, in words that say the fix. */
function describe(error: SchemaError): string | undefined {
  const field = fieldPath(error.instancePath) || 'the spec';
  switch (error.keyword) {
    case 'boolean':
      return undefined; // reported as additionalProperties on the parent
    case 'additionalProperties': {
      const extra = (error.params.additionalProperties as string[] | undefined) ?? [];
      const where = error.instancePath ? `${field} has` : 'has';
      const allowed = error.instancePath.startsWith('/requires/') ? 'url, cache, sha256' : FIELDS;
      return `${where} unknown field${extra.length > 1 ? 's' : ''} ${extra.join(', ')}: the fields are ${allowed}`;
    }
    case 'required':
      return `${field} needs ${(error.params.requiredProperties as string[]).join(', ')}`;
    case 'pattern':
      return `${field} ${PATTERN_HELP[String(error.params.pattern)] ?? error.message}`;
    case 'type':
      return `${field} must be ${error.params.type === 'array' ? 'a list' : error.params.type === 'object' ? 'a mapping' : `a ${String(error.params.type)}`}`;
    case 'maxItems':
      return `${field} has more than ${String(error.params.limit)} entries`;
    case 'minItems':
      return `${field} must not be empty`;
    case 'minLength':
      return `${field} must not be empty`;
    case 'maxLength':
      return `${field} is longer than ${String(error.params.limit)} characters`;
    case 'const':
      return `${field} must be ${JSON.stringify(error.params.allowedValue)}`;
    case 'enum':
      return `${field} must be one of ${(error.params.allowedValues as string[]).join(', ')}`;
    default:
      return `${field} ${error.message}`;
  }
}

function asList(value: unknown): string[] | undefined {
  return value === undefined ? undefined : Array.isArray(value) ? value.map(String) : [String(value)];
}

/** The spec's fields checked beyond the schema: each requirement names exactly one of url and cache. */
function checkRequirements(spec: DependencySpec, lineOf: (pointer: string) => number | undefined, file: string): void {
  (spec.requires ?? []).forEach((req, i) => {
    const has = [req.url !== undefined, req.cache !== undefined].filter(Boolean).length;
    if (has !== 1)
      throw new SpecError(
        `${file}${at(lineOf(`/requires/${i}`))}: requires[${i}] must give exactly one of url (a package by URL) and cache (a cache entry, sha256:<hex>)`,
        lineOf(`/requires/${i}`),
      );
    if (req.cache && req.sha256 && req.cache !== `sha256:${req.sha256}`)
      throw new SpecError(
        `${file}${at(lineOf(`/requires/${i}`))}: requires[${i}] names cache entry ${req.cache} but sha256 ${req.sha256}: drop sha256 (the cache entry is its digest)`,
        lineOf(`/requires/${i}`),
      );
  });
}

function at(line: number | undefined): string {
  return line === undefined ? '' : ` line ${line}`;
}

function normalize(spec: DependencySpec, source: string, lineOf: (pointer: string) => number | undefined): PackageSpec {
  return {
    source,
    requires: (spec.requires ?? []).map((req, i) => ({
      ...(req.url !== undefined ? { url: req.url } : {}),
      ...(req.cache !== undefined ? { cache: req.cache } : {}),
      ...(req.sha256 !== undefined ? { sha256: req.sha256 } : {}),
      ...(lineOf(`/requires/${i}`) !== undefined ? { line: lineOf(`/requires/${i}`) } : {}),
    })),
    ...(spec.os !== undefined ? { os: asList(spec.os) } : {}),
    ...(spec.arch !== undefined ? { arch: asList(spec.arch) } : {}),
    ...(spec.install !== undefined ? { install: spec.install } : {}),
  };
}

/**
 * Parses and checks a codebrowse.yaml. `file` names it in messages (e.g. "tool-2.0/codebrowse.yaml").
 * Throws SpecError with the line of the first problem.
 */
export function parseSpec(text: string, file = SPEC_FILE): PackageSpec {
  if (Buffer.byteLength(text) > MAX_SPEC_BYTES)
    throw new SpecError(`${file} is larger than ${MAX_SPEC_BYTES} bytes: a dependency spec is a few lines`);
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const line = first.linePos?.[0]?.line;
    const detail = first.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    throw new SpecError(`${file}${at(line)}: not valid YAML: ${detail}`, line);
  }
  const lineOf = (pointer: string): number | undefined => {
    const node = nodeAt(doc.contents, pointer);
    return node?.range ? lines.linePos(node.range[0]).line : undefined;
  };
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 16 }) ?? {};
  } catch (error) {
    throw new SpecError(`${file}: not a usable spec: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || Array.isArray(value) || value === null)
    throw new SpecError(`${file}${at(lineOf(''))}: must be a mapping with the fields ${FIELDS}`, lineOf(''));
  const errors = [...Value.Errors(DependencySpec, value)] as unknown as SchemaError[];
  // Of the errors of a union (os: linux | [linux, ...]) the first says enough.
  const messages: { line?: number; text: string }[] = [];
  const seen = new Set<string>();
  for (const error of errors) {
    if (error.keyword === 'anyOf') continue;
    const key = error.instancePath;
    const text = describe(error);
    if (!text || seen.has(key)) continue;
    seen.add(key);
    // An unknown field: the line of the field itself.
    const extra = (error.params.additionalProperties as string[] | undefined)?.[0];
    const pointer =
      extra !== undefined ? `${error.instancePath}/${extra.replace(/~/g, '~0').replace(/\//g, '~1')}` : key;
    messages.push({ line: lineOf(pointer) ?? lineOf(key), text });
  }
  if (messages.length) {
    messages.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
    const firstMessage = messages[0]!;
    throw new SpecError(
      `${file}${at(firstMessage.line)}: ${firstMessage.text}${messages.length > 1 ? ` (and ${messages.length - 1} more problem${messages.length > 2 ? 's' : ''})` : ''}`,
      firstMessage.line,
    );
  }
  const spec = value as DependencySpec;
  checkRequirements(spec, lineOf, file);
  return normalize(spec, file, lineOf);
}

/** A session's inline spec (spec.packages[].codebrowse), already checked by the CRD schema. */
export function inlineSpec(spec: DependencySpec): PackageSpec {
  checkRequirements(spec, () => undefined, 'spec.packages[].codebrowse');
  return normalize(spec, 'inline', () => undefined);
}
