// vrouterctl's command line: the options (where the daemon is, the token, --json, and the few
// that belong to one command) and the words of the command. A mistake here is a usage error
// (exit status 2), told before anything is sent to the router.
import { parseArgs } from 'node:util';

/** A command line vrouterctl cannot run: exit status 2, with the usage. */
export class UsageError extends Error {
  readonly code = 'VR_USAGE';
  /** the usage of the command at fault; null: the whole usage (no or an unknown command); '': none */
  readonly usage: string | null;
  constructor(message: string, usage: string | null = '') {
    super(message);
    this.usage = usage;
  }
}

export interface CliOptions {
  socket?: string;
  url?: string;
  'token-file'?: string;
  config?: string;
  json?: boolean;
  help?: boolean;
  // Options of one command each (Command.options says which).
  'dry-run'?: boolean;
  confirm?: string;
  blackhole?: boolean;
  count?: string;
  interval?: string;
  write?: string;
  seconds?: string;
  filter?: string;
  snap?: string;
}

export type CommandOption = 'dry-run' | 'confirm' | 'blackhole' | 'count' | 'interval' | 'write' | 'seconds' | 'filter' | 'snap';

const OPTIONS = {
  socket: { type: 'string' },
  url: { type: 'string' },
  'token-file': { type: 'string' },
  config: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  'dry-run': { type: 'boolean' },
  confirm: { type: 'string' },
  blackhole: { type: 'boolean' },
  count: { type: 'string' },
  interval: { type: 'string' },
  write: { type: 'string', short: 'w' },
  seconds: { type: 'string' },
  filter: { type: 'string' },
  snap: { type: 'string' },
} as const;

export const COMMAND_OPTIONS: readonly CommandOption[] = ['dry-run', 'confirm', 'blackhole', 'count', 'interval', 'write', 'seconds', 'filter', 'snap'];

/** Options may come before, between or after the words of the command. */
export function parseCommandLine(argv: string[]): { options: CliOptions; words: string[] } {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    return { options: values as CliOptions, words: positionals };
  } catch (err) {
    // parseArgs' messages name the option ("Unknown option '--sokcet'"); its hint about
    // "--" is for positionals that look like options, which no command takes.
    throw new UsageError((err as Error).message.replace(/\. To specify a positional argument.*$/s, ''));
  }
}

/** A whole number from min to max, or a usage error naming the option or argument. */
export function integerArg(text: string, name: string, min: number, max: number, usage = ''): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || n < min || n > max) throw new UsageError(`${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`, usage);
  return n;
}

/** A number of seconds (fractions allowed) from min to max. */
export function secondsArg(text: string, name: string, min: number, max: number, usage = ''): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${name} must be a number of seconds from ${min} to ${max}, got ${JSON.stringify(text)}`, usage);
  return n;
}
