// Steps 6–10 of a session (DESIGN.md): login, VM (a warm claim or a cold clone), the guest's install
// report, DNS, mail, Ready and expiry, plus the teardown that expiry and deletion share. Each step
// reads the world, does at most a few writes, and says whether the session may go on.
import { askKubeVirt } from '../../vm/kubevirt-actions.ts';
import { randomBytes } from 'node:crypto';
import { type BrowseSessionStatus, DEFAULT_RUN_TIMEOUT, packageRef } from '../../api/browsesession.ts';
import { durationMs, durationOr } from '../../api/duration.ts';
import type { BrowseSession, DownloadRequest, ServerPool, SessionArchive } from '../../api/objects.ts';
import { type Mailer, isTransientMailError, messageIdFor } from '../../notify/mailer.ts';
import { type SessionMailKind, renderSessionMail } from '../../notify/render.ts';
import { type KubeObject, isConflict, isNotFound, isRefusedByAdmission } from '../../runtime/client.ts';
import { type Condition, getCondition, setCondition, toApiTime as timestamp } from '../../runtime/conditions.ts';
import type { ReconcileContext } from '../../runtime/controller.ts';
import { Resources } from '../../runtime/resources.ts';
import {
  ANNOTATIONS,
  type DNSEndpoint,
  LABELS,
  type Secret,
  type VirtualMachine,
  type VirtualMachineInstance,
  agentSecretName,
  buildAgentSecret,
  buildDNSEndpoint,
  buildLoginSecret,
  buildVirtualMachine,
  dnsEndpointName,
  generatePageToken,
  generatePassword,
  hostnameOf,
  imageFor,
  loginReaderName,
  loginSecretName,
  newVmName,
  pageLink,
  pageTokenOf,
  sessionLabel,
  vmNamespace,
} from '../../vm/builders.ts';
import { DEFAULT_START_TIMEOUT_MS, describeVmState, meaningOf, printableStatus } from '../../vm/kubevirt-state.ts';
import { isWarmAndReady, nodeOf } from '../warmpool/controller.ts';
import { carriedLabels } from '../../vm/carried-labels.ts';
import { addressingOf } from '../../vm/pool-network.ts';
import { boundedName } from '../../vm/names.ts';

type Status = BrowseSessionStatus;

export interface MachineDeps {
  portalUrl: string;
  /** What the API server puts before a user's name (the chart's admission.usernamePrefix), for RoleBindings to them. */
  usernamePrefix?: string;
  /** Base of session page links: <pageBaseUrl>/sessions/<namespace>/<name>. */
  pageBaseUrl: string;
  mailer?: Mailer;
  onClaim?: (kind: 'warm' | 'cold') => void;
}

export interface StepResult {
  status: Status;
  /** False: stop here for now (waiting for something that will wake us, or failed). */
  proceed: boolean;
  requeueAfterMs?: number;
}

export function withCondition(
  status: Status,
  type: string,
  value: 'True' | 'False' | 'Unknown',
  reason: string,
  message: string,
  generation?: number,
): Status {
  return statusWithCondition(status, type, value, reason, message, generation);
}

/** Any kind's `status` with its metav1-style condition `type` set now. */
export function statusWithCondition<S extends { conditions?: unknown[] }>(
  status: S,
  type: string,
  value: 'True' | 'False' | 'Unknown',
  reason: string,
  message: string,
  generation?: number,
): S {
  return {
    ...status,
    conditions: setCondition(
      status.conditions as Condition[] | undefined,
      { type, status: value, reason, message, observedGeneration: generation },
      new Date(),
    ),
  };
}

/**
 * The session page's address without its token, <base>/sessions/<namespace>/<name>: what status.url
 * shows. Whoever may read the session sees it, so it opens nothing; the link that does (address +
 * "/" + page token) is mailed to the session's user, and `kubectl browse link` reads it from the
 * login Secret, which only they may read (ensureLoginReader); it is never stored where another user
 * of the namespace reads it (issue 21).
 */
export function pageAddress(deps: MachineDeps, session: BrowseSession): string {
  return `${deps.pageBaseUrl.replace(/\/$/, '')}/sessions/${session.metadata.namespace}/${session.metadata.name}`;
}

/** The page token of a session's login Secret, or undefined before there is one. */
export async function knownPageToken(
  session: BrowseSession,
  pool: ServerPool | undefined,
  ctx: ReconcileContext,
  known: Map<string, string>,
): Promise<string | undefined> {
  const seen = known.get(session.metadata.uid!);
  if (seen || !pool) return seen;
  const secret = await ctx.client.get<Secret>(Resources.Secret, loginSecretName(session), vmNamespace(pool));
  return pageTokenOf(secret);
}

/**
 * The user's login Secret (generated password and page token), created once; returns the page
 * token. `known` remembers it per session uid, so the Secret is read once per session, not per
 * reconcile.
 */
export async function ensureLogin(
  session: BrowseSession,
  pool: ServerPool,
  ctx: ReconcileContext,
  known: Map<string, string>,
  usernamePrefix = '',
): Promise<string> {
  const uid = session.metadata.uid!;
  const seen = known.get(uid);
  if (seen) return seen;
  const name = loginSecretName(session);
  const namespace = vmNamespace(pool);
  // Created without a look first (one request, not two, on the way every session takes); one
  // that exists already (an earlier run of ours, before a crash) keeps its password and token.
  let token: string | undefined = generatePageToken();
  let secret: Secret | undefined;
  try {
    secret = await ctx.client.create(Resources.Secret, buildLoginSecret(session, pool, generatePassword(), token));
  } catch (error) {
    if (!isConflict(error)) throw error;
    secret = await ctx.client.get<Secret>(Resources.Secret, name, namespace);
    token = pageTokenOf(secret);
  }
  if (!token) {
    // A login Secret without a page token (edited by hand): give it one.
    token = generatePageToken();
    await ctx.client.mergePatch(Resources.Secret, name, namespace, { stringData: { pageToken: token } });
  }
  if (secret) await ensureLoginReader(session, secret, ctx, usernamePrefix);
  known.set(uid, token);
  return token;
}

/**
 * Lets the session's user read their login Secret (the page link, the password), and no other: a
 * Role naming that one Secret and a RoleBinding to the user, both owned by the Secret, so they go
 * when it goes. `kubectl browse link` reads it; status.url has only the page's address (issue 21).
 */
async function ensureLoginReader(
  session: BrowseSession,
  secret: Secret,
  ctx: ReconcileContext,
  usernamePrefix: string,
): Promise<void> {
  await grantToSessionUser(session, ctx, usernamePrefix, {
    name: loginReaderName(session),
    namespace: secret.metadata.namespace!,
    owner: { apiVersion: 'v1', kind: 'Secret', name: secret.metadata.name!, uid: secret.metadata.uid! },
    rule: { apiGroups: [''], resources: ['secrets'], resourceNames: [secret.metadata.name!], verbs: ['get'] },
  });
}

/**
 * A Role of one rule and a RoleBinding of it to the session's user (`usernamePrefix` + spec.user),
 * both named `name` and owned by `owner`, so they go when it goes (garbage collection), crash or
 * not. Made once; one that exists already is left as it is.
 */
async function grantToSessionUser(
  session: BrowseSession,
  ctx: ReconcileContext,
  usernamePrefix: string,
  grant: {
    name: string;
    namespace: string;
    owner: { apiVersion: string; kind: string; name: string; uid: string };
    rule: { apiGroups: string[]; resources: string[]; resourceNames: string[]; verbs: string[] };
  },
): Promise<void> {
  const { name, namespace, owner, rule } = grant;
  const metadata = {
    name,
    namespace,
    labels: { ...carriedLabels(session.metadata.labels), [LABELS.session]: sessionLabel(session) },
    annotations: { [ANNOTATIONS.sessionRef]: `${session.metadata.namespace}/${session.metadata.name}` },
    ownerReferences: [{ ...owner, blockOwnerDeletion: false }],
  };
  const role = { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata, rules: [rule] };
  const binding = {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata,
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
    subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: `${usernamePrefix}${session.spec.user}` }],
  };
  // Both at once: a binding may name a Role that is not there yet (RBAC resolves it when asked).
  await Promise.all(
    (
      [
        [Resources.Role, role],
        [Resources.RoleBinding, binding],
      ] as const
    ).map(([type, object]) =>
      ctx.client.create(type, object as KubeObject).catch((error: unknown) => {
        if (!isConflict(error)) throw error;
      }),
    ),
  );
}

/** Whether the VM was claimed by or made for the session. */
function heldBy(vm: VirtualMachine, session: BrowseSession): boolean {
  const uid = vm.metadata.annotations?.[ANNOTATIONS.sessionUid];
  return (
    vm.metadata.labels?.[LABELS.session] === sessionLabel(session) &&
    vm.metadata.annotations?.[ANNOTATIONS.sessionRef] === `${session.metadata.namespace}/${session.metadata.name}` &&
    // VMs claimed before the uid was recorded carry none.
    (uid === undefined || uid === session.metadata.uid)
  );
}

/** The VM holding the session's label: the one it claimed or created (so a crash never makes two). */
export function sessionVm(session: BrowseSession, vms: readonly VirtualMachine[]): VirtualMachine | undefined {
  return vms.find((vm) => heldBy(vm, session) && !vm.metadata.deletionTimestamp);
}

/**
 * Whether a VM of the session still exists, being deleted included: KubeVirt keeps a deleted VM
 * (its finalizer) until its VMI has stopped, and the session's address stays taken until then.
 */
export function holdsVm(session: BrowseSession, vms: readonly VirtualMachine[]): boolean {
  return vms.some((vm) => heldBy(vm, session));
}

/** Asks KubeVirt (virt-api's unpause subresource) to run a paused VM's VMI; fine when it is not paused any more. */
export async function unpauseVm(vm: VirtualMachine, ctx: ReconcileContext): Promise<void> {
  await askKubeVirt('unpause', vm, ctx.client);
}

/** Step 6: a warm VM on the session's node claimed (label change with a resourceVersion precondition), else a cold one. */
export async function ensureVm(
  session: BrowseSession,
  status: Status,
  pool: ServerPool,
  vms: readonly VirtualMachine[],
  ctx: ReconcileContext,
  deps: MachineDeps,
): Promise<StepResult> {
  const generation = session.metadata.generation;
  const image = imageFor(session, pool);
  if (!image) {
    const text = `pool ${pool.metadata.name} offers no image for os ${session.spec.os}${session.spec.image ? ` named ${session.spec.image}` : ''}: pick one of ${pool.spec.images.map((i) => i.name).join(', ')}`;
    let failed = withCondition({ ...status, phase: 'Failed' }, 'VMReady', 'False', 'NoSuchImage', text, generation);
    failed = withCondition(failed, 'Failed', 'True', 'NoSuchImage', text, generation);
    return { status: failed, proceed: false };
  }
  let vm = sessionVm(session, vms);
  // Started from an archive: its own copy of the archived disk, never a warm VM.
  let source = image;
  if (!vm && session.spec.fromArchive) {
    const archived = archiveFor(session, ctx);
    if ('failed' in archived) {
      let failed = withCondition(
        { ...status, phase: 'Failed' },
        'VMReady',
        'False',
        archived.reason,
        archived.failed,
        generation,
      );
      failed = withCondition(failed, 'Failed', 'True', archived.reason, archived.failed, generation);
      return { status: failed, proceed: false };
    }
    if ('waiting' in archived) {
      const next = withCondition(
        { ...status, phase: 'Starting' },
        'VMReady',
        'False',
        'WaitingForArchive',
        archived.waiting,
        generation,
      );
      return { status: next, proceed: false, requeueAfterMs: 5_000 };
    }
    source = { ...image, snapshot: archived.snapshot };
  }
  if (!vm) {
    const claim = { session, node: status.node!, ip: status.ip };
    // A persistent session keeps its disk: it gets its own fresh copy, never a shared warm VM.
    const candidates = vms.filter(
      (v) =>
        !session.spec.persistent &&
        !session.spec.fromArchive &&
        isWarmAndReady(v) &&
        v.metadata.labels?.[LABELS.image] === image.name &&
        v.metadata.labels?.[LABELS.pool] === pool.metadata.name &&
        nodeOf(v) === status.node,
    );
    for (const candidate of candidates) {
      try {
        vm = await ctx.writer.mergePatch<VirtualMachine>(Resources.VirtualMachine, candidate, {
          metadata: {
            resourceVersion: candidate.metadata.resourceVersion,
            labels: {
              [LABELS.warm]: null,
              [LABELS.session]: sessionLabel(session),
              [LABELS.user]: session.spec.user.slice(0, 63),
            },
            annotations: {
              // null: a PodNetwork session has no address of ours (its pod IP comes later).
              [ANNOTATIONS.address]: claim.ip ?? null,
              [ANNOTATIONS.sessionRef]: `${session.metadata.namespace}/${session.metadata.name}`,
              [ANNOTATIONS.sessionUid]: session.metadata.uid!,
            },
          },
        });
        deps.onClaim?.('warm');
        // No Event of its own (one request less per session): the Ready event names the VM.
        ctx.log.info({ vm: vm.metadata.name, node: status.node }, 'warm VM claimed');
        break;
      } catch (error) {
        if (!(error instanceof Error && 'status' in error && error.status === 409)) throw error;
        // Another session was faster with this one: try the next.
      }
    }
    if (!vm) {
      const name = newVmName('vm', image);
      await ctx.writer.apply(
        Resources.Secret,
        buildAgentSecret(pool, name, randomBytes(24).toString('hex'), deps.portalUrl, session.metadata.labels),
        null,
      );
      const built = buildVirtualMachine(pool, source, name, claim);
      if (session.spec.fromArchive)
        built.metadata.annotations![ANNOTATIONS.restoredFrom] =
          `${session.metadata.namespace}/${session.spec.fromArchive}`;
      try {
        vm = await ctx.writer.create<VirtualMachine>(Resources.VirtualMachine, built);
      } catch (error) {
        if (!isRefusedByAdmission(error)) throw error;
        // KubeVirt's own admission (virt-api's webhooks) refuses what the image asks for: the same
        // VM would be refused again, so the session fails with KubeVirt's words, and the agent
        // Secret made for the VM goes with it.
        await ctx.client.delete(Resources.Secret, agentSecretName(name), built.metadata.namespace).catch((e) => {
          if (!isNotFound(e)) throw e;
        });
        const text = `KubeVirt refused the VM for image ${image.name} of pool ${pool.metadata.name} (fix spec.images[] of the pool): ${(error as Error).message}`;
        let failed = withCondition({ ...status, phase: 'Failed' }, 'VMReady', 'False', 'VMRefused', text, generation);
        failed = withCondition(failed, 'Failed', 'True', 'VMRefused', text, generation);
        await ctx.event('Warning', 'VMRefused', text);
        return { status: failed, proceed: false };
      }
      deps.onClaim?.('cold');
      await ctx.event(
        'Normal',
        'VMCreated',
        session.spec.fromArchive
          ? `created ${name} from archive ${session.spec.fromArchive} (snapshot ${source.snapshot}), a copy of its disk`
          : `no warm VM of ${image.name} on node ${status.node}: created ${name} from snapshot ${image.snapshot}`,
      );
    }
  }
  let next: Status = { ...status, vm: vm.metadata.name, image: image.name };
  const state = printableStatus(vm);
  // A claimed warm VM is still paused: unpause it through KubeVirt's API (again after a crash
  // between the claim and the call; a VMI that is not paused any more answers 409).
  if (state === 'Paused') {
    await unpauseVm(vm, ctx);
  }
  if (state !== 'Running') {
    const meaning = meaningOf(state);
    const previous = getCondition(status.conditions as Condition[] | undefined, 'VMReady');
    const since = previous?.status === 'False' ? Date.parse(previous.lastTransitionTime ?? '') : Date.now();
    const timeoutMs = durationOr(pool.spec.sessions?.startTimeout, DEFAULT_START_TIMEOUT_MS);
    const waited = Date.now() - (Number.isNaN(since) ? Date.now() : since);
    if (waited >= timeoutMs) {
      // KubeVirt reports a state that did not turn into Running in time: say which (in the reason
      // too: VMErrorUnschedulable, VMProvisioning...), and let go.
      const reason = state ? `VM${state}` : 'VMStartTimedOut';
      const text = `${describeVmState(vm)}, for longer than the pool's start timeout (spec.sessions.startTimeout ${pool.spec.sessions?.startTimeout ?? '15m'}): ${meaning.fix}`;
      let failed = withCondition({ ...next, phase: 'Failed' }, 'VMReady', 'False', reason, text, generation);
      failed = withCondition(failed, 'Failed', 'True', reason, text, generation);
      await ctx.event('Warning', reason, text);
      return { status: failed, proceed: false };
    }
    next = withCondition(
      { ...next, phase: 'Starting' },
      'VMReady',
      'False',
      state && meaning.failing ? state : 'Starting',
      describeVmState(vm),
      generation,
    );
    // Looked at again by the deadline, in case KubeVirt says nothing more meanwhile.
    return { status: next, proceed: false, requeueAfterMs: Math.max(1000, timeoutMs - waited) };
  }
  if (addressingOf(pool) === 'PodNetwork') {
    // The session's address is the VM's pod IP, as KubeVirt reports it (the first interface is
    // the pod network's); users get in through the API server (virt-api's port-forward).
    if (!next.ip) {
      const vmi = await ctx.client.get<VirtualMachineInstance>(
        Resources.VirtualMachineInstance,
        vm.metadata.name!,
        vm.metadata.namespace,
      );
      const podIp = vmi?.status?.interfaces?.find((i) => i.name === 'default')?.ipAddress;
      if (!podIp) {
        next = withCondition(
          { ...next, phase: 'Starting' },
          'VMReady',
          'False',
          'WaitingForPodIP',
          `VM ${vm.metadata.name} runs; KubeVirt reports no pod IP for it yet`,
          generation,
        );
        return { status: next, proceed: false, requeueAfterMs: 2_000 };
      }
      next = { ...next, ip: podIp };
    }
    // Once, as the VM becomes Ready for the session (again after a crash before the status write).
    if (getCondition(status.conditions as Condition[] | undefined, 'VMReady')?.status !== 'True')
      await ensureConnectAccess(session, vm, ctx, deps.usernamePrefix ?? '');
  }
  next = withCondition(
    next,
    'VMReady',
    'True',
    'Running',
    `VM ${vm.metadata.name} runs on node ${status.node}`,
    generation,
  );
  return { status: next, proceed: true };
}

/**
 * Lets the session's user reach their own VM through virt-api's port-forward (kubectl browse ssh,
 * addressing PodNetwork), and no other: a Role naming that one VMI and a RoleBinding to the user,
 * both owned by the VM, so they go when it goes (garbage collection), crash or not.
 */
export async function ensureConnectAccess(
  session: BrowseSession,
  vm: VirtualMachine,
  ctx: ReconcileContext,
  usernamePrefix: string,
): Promise<void> {
  await grantToSessionUser(session, ctx, usernamePrefix, {
    name: connectRoleName(vm.metadata.name!),
    namespace: vm.metadata.namespace!,
    owner: { apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: vm.metadata.name!, uid: vm.metadata.uid! },
    rule: {
      apiGroups: ['subresources.kubevirt.io'],
      resources: ['virtualmachineinstances/portforward'],
      resourceNames: [vm.metadata.name!],
      verbs: ['get'],
    },
  });
}

export function connectRoleName(vmName: string): string {
  return boundedName(vmName, '-connect');
}

/**
 * The archive a session starts from: its snapshot, or why the session must wait or fails. Only the
 * archive's owner may start from it (an admin creating the session for them counts as them).
 */
export function archiveFor(
  session: BrowseSession,
  ctx: ReconcileContext,
): { snapshot: string } | { waiting: string } | { failed: string; reason: string } {
  const name = session.spec.fromArchive!;
  const archive = ctx.cache<SessionArchive>(Resources.SessionArchive).get(`${session.metadata.namespace}/${name}`);
  // Another user's archive is reported exactly like a missing one: its existence is not for them.
  if (!archive || archive.spec.user !== session.spec.user || archive.metadata.deletionTimestamp)
    return {
      reason: 'ArchiveNotFound',
      failed: `there is no archive ${name} of ${session.spec.user} in namespace ${session.metadata.namespace} (spec.fromArchive): kubectl browse archive list shows yours`,
    };
  if (archive.status?.phase === 'Failed')
    return { reason: 'ArchiveFailed', failed: `archive ${name} failed: it holds no snapshot to start from` };
  if (archive.status?.phase !== 'Ready' || !archive.status.volumeSnapshot)
    return { waiting: `archive ${name} is ${archive.status?.phase ?? 'Pending'}: the VM starts once it is Ready` };
  if (archive.status.os && archive.status.os !== session.spec.os)
    return {
      reason: 'ArchiveMismatch',
      failed: `archive ${name} is a ${archive.status.os} VM, the session asks for ${session.spec.os} (spec.os)`,
    };
  // The new VM's disk is restored from the VolumeSnapshot KubeVirt took of the archived VM's disk.
  return { snapshot: archive.status.volumeSnapshot };
}

/** Step 7: the guest agent's report (written by the portal) says whether the packages are installed. */
export function installStep(session: BrowseSession, status: Status): StepResult {
  const installed = getCondition(status.conditions as Condition[] | undefined, 'Installed');
  if (installed?.status === 'True') return { status, proceed: true };
  if (installed?.status === 'False') {
    const failed = withCondition(
      { ...status, phase: 'Failed' },
      'Failed',
      'True',
      'InstallFailed',
      installed.message,
      session.metadata.generation,
    );
    return { status: failed, proceed: false };
  }
  const next = withCondition(
    { ...status, phase: 'Installing' },
    'Installed',
    'Unknown',
    'WaitingForAgent',
    'the guest agent has not reported yet',
    session.metadata.generation,
  );
  return { status: next, proceed: false };
}

/** A run whose VM says nothing this long after its timeout has ended is over (TimedOut). */
export const RUN_GRACE_MS = 120_000;

/**
 * Step 7 of a session of mode Run: the test runs once installed; the agent's result (written by
 * the portal into status.run) completes the session. No result by the run's timeout plus a grace
 * period: it completes as TimedOut. The teardown follows (the session has ended).
 */
export function runStep(session: BrowseSession, status: Status, now = Date.now()): StepResult {
  const generation = session.metadata.generation;
  const timeoutMs = durationOr(session.spec.run?.timeout ?? DEFAULT_RUN_TIMEOUT, 1_800_000);
  let run = status.run;
  if (!run?.finishedAt) {
    const installed = getCondition(status.conditions as Condition[] | undefined, 'Installed');
    const since = Date.parse(installed?.lastTransitionTime ?? '') || now;
    const deadline = since + timeoutMs + RUN_GRACE_MS;
    if (now < deadline) {
      const next = withCondition(
        { ...status, phase: 'Running' },
        'Completed',
        'False',
        'Running',
        `the test script runs (at most ${session.spec.run?.timeout ?? DEFAULT_RUN_TIMEOUT}, spec.run.timeout)`,
        generation,
      );
      return { status: next, proceed: false, requeueAfterMs: deadline - now };
    }
    run = { ...run, result: 'TimedOut', finishedAt: timestamp(now) };
  }
  const result = run.result ?? (run.exitCode === 0 ? 'Succeeded' : 'ScriptFailed');
  const took = run.durationSeconds !== undefined ? ` after ${run.durationSeconds} s` : '';
  const message =
    result === 'TimedOut'
      ? `the test script did not finish within spec.run.timeout (${session.spec.run?.timeout ?? DEFAULT_RUN_TIMEOUT})${took}`
      : `the test script exited ${run.exitCode}${took}`;
  let next: Status = { ...status, run, phase: 'Completed', completedAt: run.finishedAt };
  next = withCondition(next, 'Completed', 'True', result, message, generation);
  return { status: next, proceed: false };
}

/** Step 8: <user>.<zone> → the address (addressing Attachment; a pod IP is not published). */
export async function ensureDns(
  session: BrowseSession,
  status: Status,
  pool: ServerPool,
  ctx: ReconcileContext,
): Promise<StepResult> {
  if (status.addressing === 'PodNetwork') {
    const next = withCondition(
      status,
      'DNSReady',
      'False',
      'PodNetwork',
      `pool ${pool.metadata.name} gives sessions their VM's pod IP (${status.ip}), which only the cluster reaches: no DNS name is published. Get in with kubectl browse ssh ${session.metadata.name} -n ${session.metadata.namespace}`,
      session.metadata.generation,
    );
    return { status: next, proceed: true };
  }
  const endpoint = buildDNSEndpoint(session, pool, status.ip!);
  const live = ctx
    .cache<DNSEndpoint>(Resources.DNSEndpoint)
    .get(`${endpoint.metadata.namespace}/${endpoint.metadata.name}`);
  await ctx.writer.apply(Resources.DNSEndpoint, endpoint, live ?? null);
  const hostname = hostnameOf(session, pool);
  const next = withCondition(
    { ...status, hostname },
    'DNSReady',
    'True',
    'Published',
    `${hostname} → ${status.ip} (TTL ${pool.spec.dns.ttl ?? 1} s)`,
    session.metadata.generation,
  );
  return { status: next, proceed: true };
}

/** Sends the mail of `kind` once: the Notified condition's reason records which one went out. */
export async function notify(
  kind: SessionMailKind,
  session: BrowseSession,
  status: Status,
  ctx: ReconcileContext,
  deps: MachineDeps,
  pageToken: () => Promise<string | undefined>,
): Promise<StepResult> {
  const reason = {
    ready: 'ReadyMailSent',
    noCapacity: 'RetryLaterMailSent',
    failed: 'FailureMailSent',
    completed: 'ResultMailSent',
  }[kind];
  const notified = getCondition(status.conditions as Condition[] | undefined, 'Notified');
  if (notified?.status === 'True' && notified.reason === reason) return { status, proceed: true };
  if (!deps.mailer) {
    // Nothing to send with: say so truthfully, and do not pretend a mail went out.
    const message = `no mail relay is configured (operator flag --smtp-url), so the ${kind} mail was not sent`;
    if (notified?.reason === 'MailNotConfigured' && notified.message === message) return { status, proceed: true };
    const next = withCondition(status, 'Notified', 'True', 'MailNotConfigured', message, session.metadata.generation);
    return { status: next, proceed: true };
  }
  // The platform's relay sends only to the domains the pool lists (spec.mail.domains), so a session
  // cannot make it mail anyone (issue 21); the session goes on without the mail.
  const pool = ctx.cache<ServerPool>(Resources.ServerPool).get(session.spec.pool);
  const domain = session.spec.email.slice(session.spec.email.lastIndexOf('@') + 1).toLowerCase();
  const domains = pool?.spec.mail?.domains;
  if (domains && !domains.some((d) => d.toLowerCase() === domain)) {
    const message = `pool ${session.spec.pool} mails only ${domains.join(', ')} (spec.mail.domains), not ${domain}: the ${kind} mail was not sent; kubectl browse link shows the page's link`;
    if (notified?.reason === 'MailDomainNotAllowed' && notified.message === message) return { status, proceed: true };
    const next = withCondition(
      status,
      'Notified',
      'False',
      'MailDomainNotAllowed',
      message,
      session.metadata.generation,
    );
    await ctx.event('Warning', 'MailDomainNotAllowed', message);
    return { status: next, proceed: true };
  }
  const failedCondition = getCondition(status.conditions as Condition[] | undefined, 'Failed');
  const token = status.url ? await pageToken() : undefined;
  const link = status.url && token ? pageLink(status.url, token) : '';
  const mail = renderSessionMail(kind, {
    user: session.spec.user,
    sessionName: session.metadata.name!,
    namespace: session.metadata.namespace!,
    pageUrl: link,
    hostname: status.hostname,
    ip: status.ip,
    addressing: status.addressing,
    os: session.spec.os,
    image: status.image,
    expiresAt: status.expiresAt,
    duration: session.spec.duration,
    packages: (status.packages ?? session.spec.packages).map((p) => ({
      url: packageRef(p),
      installed: 'installed' in p ? p.installed : undefined,
      message: 'message' in p ? p.message : undefined,
    })),
    reason: failedCondition?.reason,
    message: failedCondition?.message,
    run: status.run,
  });
  try {
    await deps.mailer.send({
      to: session.spec.email,
      ...mail,
      messageId: messageIdFor(session.metadata.uid!, kind, deps.mailer.domain),
    });
  } catch (error) {
    const text = error instanceof Error ? error.message : String(error);
    if (isTransientMailError(error)) {
      const next = withCondition(
        status,
        'Notified',
        'False',
        'MailDeferred',
        `${text}; trying again`,
        session.metadata.generation,
      );
      return { status: next, proceed: false, requeueAfterMs: 30_000 };
    }
    await ctx.event('Warning', 'MailRejected', text);
    const next = withCondition(status, 'Notified', 'False', 'MailRejected', text, session.metadata.generation);
    return { status: next, proceed: true };
  }
  await ctx.event('Normal', 'Notified', `mailed ${session.spec.email}: ${mail.subject}`);
  const next = withCondition(
    status,
    'Notified',
    'True',
    reason,
    `mailed ${session.spec.email}`,
    session.metadata.generation,
  );
  return { status: next, proceed: true };
}

/** Step 9: Ready, with the clock of the booking started (expiresAt = readyAt + duration). */
export function readyStep(session: BrowseSession, status: Status, pool: ServerPool): StepResult {
  const now = Date.now();
  const readyAt = status.readyAt ?? timestamp(now);
  const asked = durationOr(session.spec.duration ?? pool.spec.sessions?.defaultDuration, 3_600_000);
  // The pool's longest booking holds also for a duration raised after the session was made.
  const max = pool.spec.sessions?.maxDuration ? durationMs(pool.spec.sessions.maxDuration) : undefined;
  const duration = max !== undefined && asked > max ? max : asked;
  const expiresAt = timestamp(Date.parse(readyAt) + duration);
  let next: Status = { ...status, phase: 'Ready', readyAt, expiresAt };
  const where =
    status.addressing === 'PodNetwork'
      ? `the VM (pod IP ${status.ip}, inside the cluster; kubectl browse ssh ${session.metadata.name} gets in)`
      : `${status.hostname} (${status.ip})`;
  next = withCondition(
    next,
    'Ready',
    'True',
    'Ready',
    `${where} is yours until ${expiresAt}${duration < asked ? ` (spec.duration ${session.spec.duration} is longer than pool ${pool.metadata.name}'s maxDuration ${pool.spec.sessions!.maxDuration}: booked for that)` : ''}`,
    session.metadata.generation,
  );
  return { status: next, proceed: true, requeueAfterMs: Math.max(0, Date.parse(expiresAt) - now) };
}

/**
 * Everything a session holds, released: its VM and the VM's agent Secret, DNS record, login
 * Secret and DownloadRequests. The address goes with the status write that follows (or with the
 * object), once holdsVm says the VM is gone. Idempotent: what is already gone is skipped.
 */
export async function teardown(
  session: BrowseSession,
  vms: readonly VirtualMachine[],
  requests: readonly DownloadRequest[],
  ctx: ReconcileContext,
  vmNs: string,
  keepLogin = false,
): Promise<void> {
  const ns = session.metadata.namespace;
  const gone = (error: unknown): void => {
    if (!isNotFound(error)) throw error;
  };
  await releaseVm(session, vms, ctx);
  await ctx.client.delete(Resources.DNSEndpoint, dnsEndpointName(session), ns).catch(gone);
  // A finished test run keeps its page (its token is in the login Secret) until it is deleted.
  if (!keepLogin) await ctx.client.delete(Resources.Secret, loginSecretName(session), vmNs).catch(gone);
  for (const request of requests) {
    const owned = request.metadata.ownerReferences?.some((ref) => ref.uid === session.metadata.uid);
    if (owned && request.metadata.namespace === ns)
      await ctx.client.delete(Resources.DownloadRequest, request.metadata.name!, ns).catch(gone);
  }
}

/** Deletes the session's VM and its agent Secret (a move to another node, or the end). */
export async function releaseVm(
  session: BrowseSession,
  vms: readonly VirtualMachine[],
  ctx: ReconcileContext,
): Promise<void> {
  const vm = sessionVm(session, vms);
  if (!vm) return;
  const gone = (error: unknown): void => {
    if (!isNotFound(error)) throw error;
  };
  // The token first: from then on the VM's agent (hostile or not) is nobody to the portal.
  await ctx.client.delete(Resources.Secret, agentSecretName(vm.metadata.name!), vm.metadata.namespace).catch(gone);
  await ctx.client.delete(Resources.VirtualMachine, vm.metadata.name!, vm.metadata.namespace).catch(gone);
}
