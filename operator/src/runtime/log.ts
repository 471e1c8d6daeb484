// Structured JSON logs (pino), one line per record; controllers add their name and the object's.
import { pino, type Logger, type Level } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly Level[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'];

export function createLogger(level: string = 'info', destination?: NodeJS.WritableStream): Logger {
  if (level !== 'silent' && !LOG_LEVELS.includes(level as Level))
    throw new Error(`--log-level ${level}: use one of ${LOG_LEVELS.join(', ')} or silent`);
  const options = {
    level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options);
}
