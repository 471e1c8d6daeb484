// Step 3 of a session: its packages and everything they require, one DownloadRequest each, owned by
// the session, and what their statuses add up to. A package's requirements come from its
// codebrowse.yaml (read by the downloader into the request's status) or from the session (inline,
// spec.packages[].codebrowse); they are fetched as they are discovered, breadth first. The graph
// fails on a missing requirement, a broken spec, a cycle, an OS or architecture the session does not
// have, or a size past the pool's limits; once all is downloaded, the install order puts every
// package after what it requires. Pure: builders and a summary; the controller applies and writes.
import { carriedLabels } from '../../vm/carried-labels.ts';
import { createHash } from 'node:crypto';
import { type PackageStatus, type SessionPackage } from '../../api/browsesession.ts';
import type { BrowseSession, DownloadRequest } from '../../api/objects.ts';
import { type PackageSpec, inlineSpec } from '../../deps/spec.ts';
import { controllerReference } from '../../runtime/apply.ts';
import { Resources } from '../../runtime/resources.ts';
import { boundedName, labelValue } from '../../vm/names.ts';

export const SESSION_LABEL = 'codebrowse.io/session';
export const DEFAULT_MAX_DEPENDENCY_DEPTH = 5;
export const DEFAULT_MAX_PACKAGES = 32;

export interface GraphLimits {
  maxDepth: number;
  maxPackages: number;
  /** Named in messages: "pool <name>'s spec.downloads.maxPackages". */
  pool: string;
}

/** The name of the DownloadRequest of package `index` (DNS-1123, at most 253 characters). */
export function downloadRequestName(session: BrowseSession, index: number): string {
  return boundedName(session.metadata.name!, `-pkg-${index}`);
}

/** The name of the DownloadRequest of a required package, by its identity. */
export function dependencyRequestName(session: BrowseSession, key: string): string {
  return boundedName(session.metadata.name!, `-dep-${createHash('sha256').update(key).digest('hex').slice(0, 12)}`);
}

type Reason =
  | 'DownloadFailed'
  | 'MissingRequirement'
  | 'InvalidPackageSpec'
  | 'DependencyCycle'
  | 'Unsatisfiable'
  | 'TooManyPackages'
  | 'DependenciesTooDeep';

interface Edge {
  to: GraphNode;
  /** Where the requirement is written: "lib-1.0/codebrowse.yaml line 3", or "inline". */
  where: string;
}

interface GraphNode {
  key: string;
  url?: string;
  cache?: string;
  sha256?: string;
  /** Index in spec.packages, for the session's own packages. */
  root?: number;
  inline?: PackageSpec;
  name: string;
  depth: number;
  /** The first package found to require it, and where. */
  requiredBy?: string;
  requiredAt?: string;
  edges: Edge[];
  request?: DownloadRequest;
  spec?: PackageSpec;
}

export interface DownloadSummary {
  /** Every DownloadRequest the session needs now (its packages and the requirements found so far). */
  requests: DownloadRequest[];
  done: boolean;
  failed?: { reason: Reason; message: string };
  succeeded: number;
  total: number;
  /** In install order once done (requirements first); before that, in the order they were found. */
  packages: PackageStatus[];
}

function keyOf(item: { url?: string; cache?: string }): string {
  return item.cache ? `cache:${item.cache}` : `url:${item.url}`;
}

function where(spec: PackageSpec | undefined, line?: number): string {
  if (!spec || spec.source === 'inline') return 'inline in the session';
  return `${spec.source}${line ? ` line ${line}` : ''}`;
}

function buildRequest(session: BrowseSession, node: GraphNode): DownloadRequest {
  return {
    apiVersion: 'codebrowse.io/v1alpha1',
    kind: 'DownloadRequest',
    metadata: {
      name: node.name,
      namespace: session.metadata.namespace,
      // The labels the operator carries (vm/carried-labels.ts), and the user: the store's usage
      // history records who browsed what.
      labels: {
        ...carriedLabels(session.metadata.labels),
        [SESSION_LABEL]: labelValue(session.metadata.name!),
        'codebrowse.io/user': session.spec.user,
      },
      ownerReferences: [controllerReference(Resources.BrowseSession, session)],
    },
    spec: {
      ...(node.cache ? { cache: node.cache } : { url: node.url }),
      ...(node.sha256 ? { sha256: node.sha256 } : {}),
      pool: session.spec.pool,
    },
  };
}

/** What a package is called in messages: its URL, or its cache entry (and the URL it came from). */
function nameOf(node: GraphNode): string {
  if (node.cache) {
    const from = node.request?.status?.sourceUrl;
    return from ? `${from} (cache entry ${node.cache})` : `cache entry ${node.cache}`;
  }
  return node.url!;
}

/**
 * The session's packages and their requirements as far as the DownloadRequests in `requests` tell,
 * the requests still to make, and the first failure. `limits` are the pool's.
 */
export function resolveDownloads(
  session: BrowseSession,
  requests: readonly DownloadRequest[],
  limits: GraphLimits = { maxDepth: DEFAULT_MAX_DEPENDENCY_DEPTH, maxPackages: DEFAULT_MAX_PACKAGES, pool: '' },
): DownloadSummary {
  const byName = new Map(requests.map((r) => [r.metadata.name, r]));
  const nodes = new Map<string, GraphNode>();
  const order: GraphNode[] = [];
  let failed: DownloadSummary['failed'];
  const fail = (reason: Reason, message: string): void => {
    failed ??= { reason, message };
  };

  // The session's own packages: each its own node (the same URL twice is installed twice, as asked).
  session.spec.packages.forEach((pkg: SessionPackage, index) => {
    const node: GraphNode = {
      key: `root:${index}`,
      url: pkg.url,
      cache: pkg.cache,
      sha256: pkg.sha256,
      root: index,
      inline: pkg.codebrowse ? inlineSpec(pkg.codebrowse) : undefined,
      name: downloadRequestName(session, index),
      depth: 0,
      edges: [],
    };
    node.request = byName.get(node.name);
    order.push(node);
    // A requirement naming one of the session's packages is that package (first of its URL).
    if (!nodes.has(keyOf(pkg))) nodes.set(keyOf(pkg), node);
  });

  // Breadth first: each downloaded package's requirements become nodes.
  for (let i = 0; i < order.length; i++) {
    const node = order[i]!;
    const status = node.request?.status;
    if (status?.phase === 'Failed') {
      const why = `${status.reason ?? 'Failed'}: ${status.message ?? ''}`;
      if (node.root !== undefined)
        fail('DownloadFailed', `package ${node.root + 1} (${nameOf(node)}) could not be downloaded: ${why}`);
      else
        fail(
          'MissingRequirement',
          `package ${node.requiredBy} requires ${nameOf(node)} (${node.requiredAt ?? 'its spec'}), which could not be downloaded: ${why}`,
        );
      continue;
    }
    if (status?.phase !== 'Succeeded') continue;
    if (!node.inline && status.packageSpecError) {
      fail('InvalidPackageSpec', `package ${nameOf(node)}: ${status.packageSpecError}`);
      continue;
    }
    const spec = node.inline ?? (status.packageSpec as PackageSpec | undefined);
    node.spec = spec;
    if (!spec) continue;
    const arch = session.spec.arch ?? 'amd64';
    if (spec.os && !spec.os.includes(session.spec.os))
      fail(
        'Unsatisfiable',
        `package ${nameOf(node)} runs on ${spec.os.join(', ')} (${where(spec)}), not on ${session.spec.os} (spec.os): pick another package or OS`,
      );
    else if (spec.arch && !spec.arch.includes(arch))
      fail(
        'Unsatisfiable',
        `package ${nameOf(node)} runs on ${spec.arch.join(', ')} (${where(spec)}), not on ${arch} (spec.arch): pick another package or architecture`,
      );
    for (const requirement of spec.requires) {
      const key = keyOf(requirement);
      const at = where(spec, requirement.line);
      let child = nodes.get(key);
      if (!child) {
        const depth = node.depth + 1;
        if (depth > limits.maxDepth) {
          fail(
            'DependenciesTooDeep',
            `package ${nameOf(node)} requires ${requirement.url ?? `cache entry ${requirement.cache}`} (${at}), ${depth} levels below the session's package, past ${limits.pool ? `pool ${limits.pool}'s ` : 'the '}spec.downloads.maxDependencyDepth (${limits.maxDepth})`,
          );
          break;
        }
        if (order.length + 1 > limits.maxPackages) {
          fail(
            'TooManyPackages',
            `the session's packages and what they require come to more than ${limits.maxPackages} packages (${limits.pool ? `pool ${limits.pool}'s ` : 'the '}spec.downloads.maxPackages) at package ${nameOf(node)}'s requirement ${requirement.url ?? requirement.cache} (${at})`,
          );
          break;
        }
        child = {
          key,
          url: requirement.url,
          cache: requirement.cache,
          sha256: requirement.sha256,
          name: dependencyRequestName(session, key),
          depth,
          requiredBy: nameOf(node),
          requiredAt: at,
          edges: [],
        };
        child.request = byName.get(child.name);
        nodes.set(key, child);
        order.push(child);
      }
      node.edges.push({ to: child, where: at });
    }
  }
  const cycle = findCycle(order);
  if (cycle && !failed) fail('DependencyCycle', cycle);

  const done = !failed && order.every((n) => n.request?.status?.phase === 'Succeeded');
  const installOrder = done ? topological(order) : order;
  const previous = session.status?.packages ?? [];
  const packages = installOrder.map((node): PackageStatus => {
    const status = node.request?.status;
    const url = node.url ?? status?.sourceUrl ?? node.cache!;
    // Install results (written later by the guest agent) are kept.
    const kept = previous.find((p) => p.downloadRequest === node.name && p.url === url);
    return {
      ...kept,
      url,
      ...(node.cache ? { cache: node.cache } : {}),
      ...(node.root === undefined && node.requiredBy ? { requiredBy: node.requiredBy } : {}),
      downloadRequest: node.name,
      ...(status?.digest ? { digest: status.digest } : {}),
      ...(status?.bytes !== undefined ? { bytes: status.bytes } : {}),
      ...(node.spec?.install?.length ? { install: node.spec.install } : {}),
    };
  });
  const succeeded = order.filter((n) => n.request?.status?.phase === 'Succeeded').length;
  return {
    requests: order.map((node) => buildRequest(session, node)),
    done,
    failed,
    succeeded,
    total: order.length,
    packages,
  };
}

/** A cycle among the edges known so far, as a sentence with the line of each step; undefined if none. */
function findCycle(order: readonly GraphNode[]): string | undefined {
  const state = new Map<GraphNode, 'open' | 'done'>();
  const stack: { node: GraphNode; via?: Edge }[] = [];
  let found: string | undefined;
  const visit = (node: GraphNode, via?: Edge): void => {
    if (found) return;
    state.set(node, 'open');
    stack.push({ node, via });
    for (const edge of node.edges) {
      const child = edge.to;
      const seen = state.get(child);
      if (seen === 'open') {
        const start = stack.findIndex((s) => s.node === child);
        const steps = [...stack.slice(start + 1).map((s) => s), { node: child, via: edge }];
        const parts = steps.map((step, i) => {
          const from = i === 0 ? stack[start]!.node : steps[i - 1]!.node;
          return `${nameOf(from)} requires ${nameOf(step.node)} (${step.via!.where})`;
        });
        found = `dependency cycle: ${parts.join(', and ')}; a package cannot require itself, directly or through others: remove one of these requirements`;
        return;
      }
      if (!seen) visit(child, edge);
      if (found) return;
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of order) if (node.root !== undefined && !state.has(node)) visit(node);
  return found;
}

/** Install order: depth first from the session's packages in their order, requirements first. */
function topological(order: readonly GraphNode[]): GraphNode[] {
  const placed = new Set<GraphNode>();
  const result: GraphNode[] = [];
  const place = (node: GraphNode): void => {
    if (placed.has(node)) return;
    placed.add(node);
    for (const edge of node.edges) place(edge.to);
    result.push(node);
  };
  for (const node of order) if (node.root !== undefined) place(node);
  return result;
}
