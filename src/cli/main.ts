// vrouterctl: the command table, the usage made from it, and the edge where every outcome
// becomes an exit status and a line a person can act on: 0 done, 1 refused by vrouter
// ("error CODE at FIELD: MESSAGE"), 2 usage, 3 vrouter unreachable.
import { COMMAND_OPTIONS, parseCommandLine, UsageError, type CliOptions } from './args.ts';
import { aclCommands } from './acl.ts';
import { captureCommand } from './capture.ts';
import { AdminClient, RefusedError, UnreachableError } from './client.ts';
import { usageOf, type Command, type Context } from './command.ts';
import { configCommands } from './config.ts';
import { portChangeCommands } from './port-changes.ts';
import { portCommands } from './ports.ts';
import { routingCommands } from './routing.ts';
import { ADMIN_ENV, readToken, resolveTarget, SYSTEM_SOCKET, TOKEN_ENV, type Target } from './target.ts';
import { topCommand } from './top.ts';

export const EXIT = { done: 0, refused: 1, usage: 2, unreachable: 3, unreadable: 4 } as const;

const GROUPS: [string, Command[]][] = [
  ['Ports and counters', portCommands],
  ['Adding and removing ports, moving queues', portChangeCommands],
  ['Live view', [topCommand, captureCommand]],
  ['Routing', routingCommands],
  ['ACL and policers', aclCommands],
  ['The whole config', configCommands],
];
const COMMANDS = GROUPS.flatMap(([, commands]) => commands);

/** Other spellings an operator may type. */
const ALIASES: Record<string, string> = { neighbors: 'neighbours', neighbor: 'neighbour', delete: 'del', rm: 'del' };
/** A listing's plural before a subcommand of its singular ("routes add", as `ip routes add` is read): the singular meant. */
const SINGULAR: Record<string, string> = { routes: 'route', neighbours: 'neighbour', ports: 'port' };

export function usage(defaultConfig: string): string {
  // A long command line puts its summary on the next line, so that the text stays narrow.
  const width = 32;
  const entry = (c: Command) => {
    const line = usageOf(c);
    return line.length <= width ? `  ${line.padEnd(width)}  ${c.summary}` : `  ${line}\n  ${''.padEnd(width)}  ${c.summary}`;
  };
  const groups = GROUPS.map(([title, commands]) => `${title}:\n${commands.map(entry).join('\n')}`);
  return `usage: vrouterctl [options] COMMAND [ARGS]

${groups.join('\n\n')}

Options:
  --socket PATH      the admin endpoint's UNIX socket
  --url URL          the admin endpoint over TCP: http://127.0.0.1:PORT
  --config FILE      the daemon's config file: its "admin" setting says where the endpoint is
                     (and admin.tokenFile, if readable, gives the token)
  --token-file FILE  the bearer token, for an endpoint with admin.tokenFile set; also $${TOKEN_ENV}
                     (the token itself). Sent with every request but reads (config diff too)
  --json             print the endpoint's JSON as it comes (top: one JSON object a line)
  -h, --help         this text

Where vrouter is, the first that applies: --socket; --url; --config; $${ADMIN_ENV}
(unix:PATH or http://HOST:PORT); the admin.sock next to ${defaultConfig}
(where \`npx vrouter\` without --config listens); ${SYSTEM_SOCKET} (the systemd unit of
examples/systemd) when that first one does not exist.

Exit status:
  0  done
  1  refused: vrouter answered with an error, printed as "error CODE at FIELD: MESSAGE"
     (VR_CONFIG, VR_INVALID, VR_NOT_FOUND, VR_UNAUTHORIZED, VR_NEEDS_RESTART, ...)
  2  usage: unknown command or option, missing or bad argument, unreadable FILE
  3  vrouter unreachable: not running, no permission on its socket, or gone mid-request
  4  an answer vrouterctl could not read (not vrouter's endpoint?), or its own fault`;
}

/** The command the words name (the longest match), and its arguments. */
function findCommand(words: string[]): { command: Command; args: string[] } {
  const normal = words.map((w) => ALIASES[w] ?? w);
  const singular = SINGULAR[normal[0]];
  if (singular !== undefined && normal.length > 1 && COMMANDS.some((c) => c.words[0] === singular && c.words[1] === normal[1])) normal[0] = singular;
  let best: Command | null = null;
  for (const c of COMMANDS) {
    if (c.words.every((w, i) => normal[i] === w) && (best === null || c.words.length > best.words.length)) best = c;
  }
  const group = COMMANDS.filter((c) => c.words.length > 1 && c.words[0] === normal[0]);
  const groupUsage = group.map((c) => `vrouterctl ${usageOf(c)}`).join('\n       ');
  // "acl sett FILE": a misspelt subcommand, not arguments to "acl".
  const misspelt = best !== null && best.words.length === 1 && (best.max ?? 0) === 0 && normal.length > 1 && group.length > 0;
  if (best === null || misspelt) {
    if (group.length === 0) throw new UsageError(`unknown command "${words[0]}"`, null);
    if (normal.length === 1) throw new UsageError(`${normal[0]} needs one of: ${group.map((c) => c.words[1]).join(', ')}`, groupUsage);
    throw new UsageError(`unknown command "${normal[0]} ${normal[1]}"`, groupUsage);
  }
  return { command: best, args: words.slice(best.words.length) };
}

function checkArguments(command: Command, args: string[], options: CliOptions): void {
  const min = command.min ?? 0;
  const max = command.max ?? 0;
  const line = `vrouterctl ${usageOf(command)}`;
  if (args.length < min) throw new UsageError(`${command.words.join(' ')} needs ${command.args}`, line);
  if (args.length > max) throw new UsageError(max === 0 ? `${command.words.join(' ')} takes no arguments, got "${args.join(' ')}"` : `too many arguments for ${command.words.join(' ')}: "${args.slice(max).join(' ')}"`, line);
  for (const option of COMMAND_OPTIONS) {
    if (options[option] !== undefined && !(command.options ?? []).includes(option)) throw new UsageError(`--${option} does not apply to ${command.words.join(' ')}`, line);
  }
}

export interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

/** Runs a command line; resolves with the exit status. defaultConfig: the daemon's own default. */
export async function main(argv: string[], io: Io, defaultConfig: string): Promise<number> {
  const fail = (line: string) => io.stderr.write(`vrouterctl: ${line}\n`);
  let client: AdminClient | null = null;
  let json = false;
  try {
    const { options, words } = parseCommandLine(argv);
    json = options.json === true;
    if (options.help || (words.length === 1 && words[0] === 'help')) {
      io.stdout.write(`${usage(defaultConfig)}\n`);
      return EXIT.done;
    }
    if (words.length === 0) throw new UsageError('no command given', null);
    const { command, args } = findCommand(words);
    checkArguments(command, args, options);
    const target: Target = resolveTarget(options, io.env, defaultConfig);
    let token: string | null | undefined;
    client = new AdminClient(target, () => (token === undefined ? (token = readToken(options, io.env, target)) : token));
    const ctx: Context = { api: client, target, options, json, stdout: io.stdout, out: (text) => void io.stdout.write(`${text}\n`), stderr: io.stderr };
    await command.run(ctx, args);
    return EXIT.done;
  } catch (err) {
    if (err instanceof UsageError) {
      fail(err.message);
      io.stderr.write(err.usage === null ? `${usage(defaultConfig)}\n` : `${err.usage === '' ? '' : `usage: ${err.usage}\n`}(vrouterctl --help lists every command and option)\n`);
      return EXIT.usage;
    }
    if (err instanceof RefusedError) {
      if (json) io.stdout.write(`${err.body.trimEnd()}\n`);
      fail(`error ${err.code}${err.field !== '' ? ` at ${err.field}` : ''}: ${err.message}`);
      return EXIT.refused;
    }
    if (err instanceof UnreachableError) {
      fail(err.message);
      return EXIT.unreachable;
    }
    // One line, not a stack: an answer of another shape (a URL that is another server's), or
    // vrouterctl's own failure ($VROUTERCTL_STACK=1 shows where).
    fail(`failed: ${(err as Error)?.message ?? String(err)} (an answer it could not read: is the target vrouter's admin endpoint?)`);
    if (io.env.VROUTERCTL_STACK === '1') io.stderr.write(`${(err as Error)?.stack ?? ''}\n`);
    return EXIT.unreadable;
  } finally {
    await client?.close();
  }
}
