// metav1.Condition helpers, pure. A condition's lastTransitionTime moves only when its status
// changes, so a user can tell how long something has been wrong.

export type ConditionStatus = 'True' | 'False' | 'Unknown';

export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  /** RFC 3339 with second precision, as the API server stores it. */
  lastTransitionTime: string;
  observedGeneration?: number;
}

export interface ConditionUpdate {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  observedGeneration?: number;
}

// The pattern metav1.Condition's reason must match.
const REASON_PATTERN = /^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/;

export function setCondition(
  conditions: readonly Condition[] | undefined,
  update: ConditionUpdate,
  now: Date,
): Condition[] {
  if (!REASON_PATTERN.test(update.reason)) {
    throw new Error(`condition ${update.type}: reason ${JSON.stringify(update.reason)} is not CamelCase`);
  }
  const result = [...(conditions ?? [])];
  const index = result.findIndex((condition) => condition.type === update.type);
  const existing = index === -1 ? undefined : result[index];
  const lastTransitionTime =
    existing && existing.status === update.status ? existing.lastTransitionTime : toApiTime(now);
  const condition: Condition = {
    type: update.type,
    status: update.status,
    reason: update.reason,
    message: update.message,
    lastTransitionTime,
  };
  // Like apimachinery's SetStatusCondition: the update's observedGeneration replaces the old one.
  if (update.observedGeneration !== undefined) condition.observedGeneration = update.observedGeneration;
  if (index === -1) result.push(condition);
  else result[index] = condition;
  return result;
}

export function getCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((condition) => condition.type === type);
}

export function isConditionTrue(conditions: readonly Condition[] | undefined, type: string): boolean {
  return getCondition(conditions, type)?.status === 'True';
}

export function removeCondition(conditions: readonly Condition[] | undefined, type: string): Condition[] {
  return (conditions ?? []).filter((condition) => condition.type !== type);
}

/**
 * The Ready condition of an object whose readiness is the sum of `dependsOn`: False as soon as one
 * of them is False, Unknown while one is Unknown or not reported yet, True when all are True.
 */
export function deriveReady(
  conditions: readonly Condition[] | undefined,
  dependsOn: readonly string[],
): ConditionUpdate {
  for (const type of dependsOn) {
    const condition = getCondition(conditions, type);
    if (condition?.status === 'False') {
      return { type: 'Ready', status: 'False', reason: condition.reason, message: condition.message };
    }
  }
  for (const type of dependsOn) {
    const condition = getCondition(conditions, type);
    if (!condition) {
      return { type: 'Ready', status: 'Unknown', reason: 'Pending', message: `Waiting for condition ${type}` };
    }
    if (condition.status !== 'True') {
      return {
        type: 'Ready',
        status: 'Unknown',
        reason: condition.reason,
        message: condition.message || `Condition ${type} is ${condition.status}`,
      };
    }
  }
  const message = dependsOn.length === 0 ? 'Nothing to wait for' : `${listTypes(dependsOn)} True`;
  return { type: 'Ready', status: 'True', reason: 'Ready', message };
}

/** Whether writing `b` over `a` would change nothing; a missing list equals an empty one. */
export function conditionsEqual(a: readonly Condition[] | undefined, b: readonly Condition[] | undefined): boolean {
  const left = a ?? [];
  const right = b ?? [];
  if (left.length !== right.length) return false;
  return left.every((x, i) => {
    const y = right[i];
    return (
      y !== undefined &&
      x.type === y.type &&
      x.status === y.status &&
      x.reason === y.reason &&
      x.message === y.message &&
      x.lastTransitionTime === y.lastTransitionTime &&
      x.observedGeneration === y.observedGeneration
    );
  });
}

/** A metav1.Time: RFC 3339 without fractional seconds (Go truncates rather than rounds). */
export function toApiTime(at: Date | number = Date.now()): string {
  return new Date(at).toISOString().replace(/\.\d+Z$/, 'Z');
}

function listTypes(types: readonly string[]): string {
  if (types.length === 1) return `${types[0]} is`;
  return `${types.slice(0, -1).join(', ')} and ${types.at(-1)} are`;
}
