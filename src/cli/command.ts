// What a vrouterctl command is: its words, the arguments it takes (for the usage), and what
// it does with the endpoint; and the context every command runs in.
import type { CommandOption, CliOptions } from './args.ts';
import { UsageError } from './args.ts';
import type { AdminClient, Answer } from './client.ts';
import type { Target } from './target.ts';

export interface Context {
  api: AdminClient;
  target: Target;
  options: CliOptions;
  /** --json: print the endpoint's JSON as it came */
  json: boolean;
  stdout: NodeJS.WriteStream;
  /** writes one or more lines to stdout */
  out(text: string): void;
  /** for what must not mix with stdout (a capture written there) */
  stderr: NodeJS.WritableStream;
}

export interface Command {
  /** the words that name it: ["route", "add"] */
  words: string[];
  /** its arguments, as the usage shows them */
  args?: string;
  summary: string;
  /** how many arguments it takes after its words (default none) */
  min?: number;
  max?: number;
  /** the command options it accepts, beyond the global ones */
  options?: CommandOption[];
  run(ctx: Context, args: string[]): Promise<void>;
}

/** The usage line of a command: "route del PREFIX". */
export function usageOf(command: Command): string {
  return [...command.words, command.args ?? ''].join(' ').trim();
}

/** Prints an answer: as it came with --json, else as human(json) makes it. */
export function show(ctx: Context, answer: Answer, human: (json: any) => string): void {
  ctx.out(ctx.json ? answer.text.trimEnd() : human(answer.json));
}

/** A usage error about one command. */
export function misuse(command: Command, message: string): UsageError {
  return new UsageError(message, `vrouterctl ${usageOf(command)}`);
}

/** The path segment of a value (a prefix has a "/" in it: 192.0.2.0%2F24). */
export const segment = (value: string) => encodeURIComponent(value);
