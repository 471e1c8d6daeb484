// Which labels of a user's object (a session, an archive) are copied onto the objects made for it
// (its VM and launcher pod, Secrets, DownloadRequests, DNSEndpoint, snapshot): only those with a
// prefix the operator was told to carry (--carry-label-prefix; none by default), and never one of
// codebrowse's own (codebrowse.io/...), which decide what the operator does with an object. A
// tenant's labels otherwise land on pods that run hostile code, or pass for the operator's own.

let prefixes: readonly string[] = [];

/** Set once, as the operator starts. */
export function carryLabelPrefixes(list: readonly string[]): void {
  prefixes = list.filter(Boolean);
}

/** The labels of `labels` that are carried. */
export function carriedLabels(labels: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels ?? {}))
    if (!key.startsWith('codebrowse.io/') && prefixes.some((p) => key.startsWith(p))) out[key] = value;
  return out;
}
