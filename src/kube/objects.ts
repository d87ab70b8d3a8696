/** Anything with status conditions: pods and nodes alike. */
interface WithConditions {
  status?: {conditions?: Array<{type: string; status: string}>}
}

/** The object's Ready condition is True (pod ready, node ready); absent counts as not ready. */
export function isReady(object: WithConditions): boolean {
  return object.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false
}
