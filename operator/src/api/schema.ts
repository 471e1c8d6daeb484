// Schema pieces shared by the three kinds. Each helper returns a TypeBox schema whose JSON is already
// what a Kubernetes structural schema allows (`type` on every node, `additionalProperties` for maps,
// `x-kubernetes-*` extensions), so the CRD generator only checks, never rewrites.
import Type, { type TSchema } from 'typebox';

export const GROUP = 'codebrowse.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

/** One CEL rule of `x-kubernetes-validations`. The message must name what is wrong and how to fix it. */
export interface CelRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: 'FieldValueInvalid' | 'FieldValueForbidden' | 'FieldValueRequired' | 'FieldValueDuplicate';
  optionalOldSelf?: boolean;
}

export function rule(expression: string, message: string, extra: Omit<CelRule, 'rule' | 'message'> = {}): CelRule {
  return { rule: expression, message, ...extra };
}

/**
 * A transition rule, set on the parent object, that keeps `parent.name` as it was at creation.
 * On the parent (not the field) so that an optional field cannot be added or removed either.
 */
export function unchanged(parent: string, name: string, optional = false): CelRule {
  const same = `self.${name} == oldSelf.${name}`;
  return rule(
    optional ? `has(self.${name}) == has(oldSelf.${name}) && (!has(self.${name}) || ${same})` : same,
    `${parent}.${name} cannot be changed after creation; delete and re-create the object instead`,
    { fieldPath: `.${name}` },
  );
}

type Options = Record<string, unknown> & { description: string };

export function stringEnum<const T extends readonly string[]>(values: T, options: Options) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/** A map of strings, like a label selector's matchLabels. */
export function stringMap(options: Options) {
  return Type.Unsafe<Record<string, string>>({
    type: 'object',
    additionalProperties: { type: 'string', maxLength: 253 },
    maxProperties: 32,
    ...options,
  });
}

/** A Kubernetes resource quantity ("1Gi", "512Mi" or a plain number), as the API server itself types it. */
export function quantity(options: Options) {
  return Type.Unsafe<string | number>({
    'x-kubernetes-int-or-string': true,
    pattern:
      '^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$',
    ...options,
  });
}

export function timestamp(options: Options) {
  return Type.String({ format: 'date-time', ...options });
}

/** RFC 1123 DNS label: what Kubernetes accepts as a namespace name, and what a host name part must be. */
export function dnsLabel(field: string, options: Options) {
  return Type.String({
    maxLength: 63,
    'x-kubernetes-validations': [
      rule(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        `${field} must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters (e.g. "alice")`,
      ),
    ],
    ...options,
  });
}

/** RFC 1123 subdomain: a Kubernetes object name. */
export function objectName(field: string, options: Options) {
  return Type.String({
    maxLength: 253,
    'x-kubernetes-validations': [
      rule(
        "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",
        `${field} must be the name of a Kubernetes object: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit`,
      ),
    ],
    ...options,
  });
}

// Go duration syntax (what CEL's duration() parses), restricted to the units a person books time in.
const DURATION_PATTERN = '^([0-9]+(\\\\.[0-9]+)?(h|m|s|ms))+$';

/** A positive Go-style duration ("90m", "2h", "1h30m") no longer than `max`. */
export function duration(field: string, max: string, options: Options) {
  const valid = `self.matches('${DURATION_PATTERN}')`;
  return Type.String({
    maxLength: 32,
    'x-kubernetes-validations': [
      rule(valid, `${field} must be a positive duration such as "90m", "2h" or "1h30m" (units h, m, s)`),
      rule(`!${valid} || duration(self) > duration('0s')`, `${field} must be longer than 0s`),
      rule(`!${valid} || duration(self) <= duration('${max}')`, `${field} must be at most ${max}`),
    ],
    ...options,
  });
}

/** A package URL: only the schemes the downloader has a plug-in for, with a host, without credentials. */
export function packageUrl(field: string, options: Options) {
  return Type.String({
    maxLength: 2048,
    'x-kubernetes-validations': [
      rule(
        "isURL(self) && url(self).getScheme() in ['http', 'https', 'ftp']",
        `${field} must be an http://, https:// or ftp:// URL (other schemes such as file:// are not downloaded)`,
      ),
      rule(
        "!isURL(self) || !(url(self).getScheme() in ['http', 'https', 'ftp']) || url(self).getHostname() != ''",
        `${field} must name a host, as in https://example.org/pkg.tar.gz`,
      ),
      rule(
        "!self.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')",
        `${field} must not carry a user name or password; publish the package where it can be fetched without credentials`,
      ),
      rule(
        "!self.matches('[\\\\s\\\\x00-\\\\x1f\\\\x7f]')",
        `${field} must not contain spaces or control characters; percent-encode them`,
      ),
    ],
    ...options,
  });
}

export function sha256(field: string, options: Options) {
  return Type.String({
    maxLength: 64,
    'x-kubernetes-validations': [
      rule("self.matches('^[0-9a-f]{64}$')", `${field} must be 64 lower-case hex digits, as printed by sha256sum`),
    ],
    ...options,
  });
}

export const Condition = Type.Object(
  {
    type: Type.String({ maxLength: 316, description: 'Type of the condition, in CamelCase (e.g. Ready, Downloaded).' }),
    status: stringEnum(['True', 'False', 'Unknown'] as const, { description: 'Status of the condition.' }),
    observedGeneration: Type.Optional(
      Type.Integer({
        format: 'int64',
        minimum: 0,
        description: 'The .metadata.generation that the condition was set from.',
      }),
    ),
    lastTransitionTime: timestamp({ description: 'When the status of the condition last changed.' }),
    reason: Type.String({
      maxLength: 1024,
      description: 'A CamelCase word saying why the condition has its status, for programs.',
    }),
    message: Type.String({ maxLength: 32768, description: 'What happened, for people: what to do next if anything.' }),
  },
  { description: 'A condition in the shape of metav1.Condition.' },
);

export function conditions(description: string) {
  return Type.Array(Condition, {
    description,
    maxItems: 32,
    'x-kubernetes-list-type': 'map',
    'x-kubernetes-list-map-keys': ['type'],
  });
}

/** Printer column of `kubectl get`. */
export interface PrinterColumn {
  name: string;
  type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  jsonPath: string;
  description: string;
  priority?: number;
}

/** Everything the CRD generator needs to know about one kind. */
export interface KindDefinition {
  kind: string;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: 'Namespaced' | 'Cluster';
  description: string;
  spec: TSchema;
  status: TSchema;
  printerColumns: PrinterColumn[];
}
