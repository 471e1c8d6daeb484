// Go-style durations as the CRDs accept them ("90m", "2h", "1h30m", "500ms"), in milliseconds.

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Milliseconds of a duration such as "1h30m"; undefined when the text is not one. */
export function durationMs(text: string): number | undefined {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (!text || parts.map((p) => p[0]).join('') !== text) return undefined;
  return parts.reduce((sum, [, value, unit]) => sum + Number(value) * UNITS[unit!]!, 0);
}

/** Like durationMs, with a fallback for a missing or (schema-validated, so unlikely) bad value. */
export function durationOr(text: string | undefined, fallbackMs: number): number {
  return (text === undefined ? undefined : durationMs(text)) ?? fallbackMs;
}

/** "2h30m", "45m", "1h", "90s": the shortest Go-style spelling of whole seconds. */
export function formatDuration(ms: number): string {
  const total = Math.round(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const text = `${h ? `${h}h` : ''}${m ? `${m}m` : ''}${s ? `${s}s` : ''}`;
  return text || '0s';
}
