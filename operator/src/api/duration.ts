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

/** The Go-style spelling durationMs reads back: "2h30m", "45m", "90s", "1s500ms"; "0s" for none. */
export function formatDuration(ms: number): string {
  if (ms <= 0) return '0s';
  const parts: string[] = [];
  let rest = Math.round(ms);
  for (const [unit, size] of Object.entries(UNITS).sort((a, b) => b[1] - a[1])) {
    const count = Math.floor(rest / size);
    if (count > 0) parts.push(`${count}${unit}`);
    rest -= count * size;
  }
  return parts.join('');
}
