// Where vrouterctl finds the admin endpoint, and the token it sends with changes. The order,
// first that applies: --socket PATH; --url URL; --config FILE (its "admin" setting, as the
// daemon reads it); $VROUTER_ADMIN; then the daemon's usual places: the admin.sock next to
// the install's config/default.json (`npm start`, `npx vrouter`), /run/vrouter/admin.sock
// (the systemd unit of examples/systemd), the first of them that exists.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { UsageError, type CliOptions } from './args.ts';

export type Target = ({ kind: 'unix'; path: string } | { kind: 'tcp'; origin: string }) & {
  /** how it was chosen, for messages: "--socket", "admin.listen of /etc/vrouter/vrouter.json" */
  from: string;
  /** the config file it came from, for "start it with" hints */
  config?: string;
  /** the config's admin.tokenFile, used when no token is given */
  tokenFile?: string;
};

export const ADMIN_ENV = 'VROUTER_ADMIN';
export const TOKEN_ENV = 'VROUTER_TOKEN';
/** where the systemd unit of examples/systemd puts the admin socket */
export const SYSTEM_SOCKET = '/run/vrouter/admin.sock';

/** Where to connect. defaultConfig: the config vrouter itself starts on without --config. */
export function resolveTarget(options: CliOptions, env: NodeJS.ProcessEnv, defaultConfig: string): Target {
  if (options.socket !== undefined && options.url !== undefined) throw new UsageError('give --socket or --url, not both');
  if (options.socket !== undefined) return { kind: 'unix', path: resolve(options.socket), from: '--socket' };
  if (options.url !== undefined) return { kind: 'tcp', origin: httpOrigin(options.url, '--url'), from: '--url' };
  if (options.config !== undefined) return fromConfig(options.config, true)!;
  const fromEnv = env[ADMIN_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.startsWith('unix:')) return { kind: 'unix', path: resolve(fromEnv.slice(5)), from: `$${ADMIN_ENV}` };
    if (fromEnv.startsWith('/')) return { kind: 'unix', path: fromEnv, from: `$${ADMIN_ENV}` };
    return { kind: 'tcp', origin: httpOrigin(fromEnv, `$${ADMIN_ENV}`), from: `$${ADMIN_ENV}` };
  }
  const usual = fromConfig(defaultConfig, false);
  const system: Target = { kind: 'unix', path: SYSTEM_SOCKET, from: `the system's admin socket` };
  if (usual === null) return system;
  if (usual.kind === 'tcp' || existsSync(usual.path) || !existsSync(SYSTEM_SOCKET)) return usual;
  return system;
}

/** The token for changes: --token-file, then $VROUTER_TOKEN, then the config's admin.tokenFile. */
export function readToken(options: CliOptions, env: NodeJS.ProcessEnv, target: Target): string | null {
  if (options['token-file'] !== undefined) {
    try {
      return readFileSync(options['token-file'], 'utf8').trim();
    } catch (err) {
      throw new UsageError(`cannot read --token-file ${options['token-file']}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const fromEnv = env[TOKEN_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return fromEnv.trim();
  if (target.tokenFile !== undefined) {
    try {
      return readFileSync(target.tokenFile, 'utf8').trim();
    } catch {
      // Often readable by the daemon's user only: the endpoint's 401 then says what is missing.
      return null;
    }
  }
  return null;
}

/** "http://127.0.0.1:8080", "127.0.0.1:8080" or "[::1]:8080" as an origin; the endpoint speaks plain HTTP. */
function httpOrigin(text: string, name: string): string {
  let url: URL;
  try {
    url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(text) ? text : `http://${text}`);
  } catch {
    throw new UsageError(`${name} must be http://HOST:PORT, got ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:') throw new UsageError(`${name} must be http://HOST:PORT (the admin endpoint speaks plain HTTP, meant for loopback), got ${JSON.stringify(text)}`);
  if (url.pathname !== '/' || url.search !== '') throw new UsageError(`${name} must be http://HOST:PORT without a path, got ${JSON.stringify(text)}`);
  return url.origin;
}

/**
 * The admin setting of a config file, with the daemon's defaults (parseAdmin in
 * src/control/config.ts): "unix:PATH" or "HOST:PORT", paths taken from the file's directory,
 * and without "listen" the admin.sock next to the file. The daemon checks the rest.
 */
function fromConfig(path: string, required: boolean): Target | null {
  const file = resolve(path);
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if (!required) return null;
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(`cannot read --config ${path}: ${e.code !== undefined ? e.code : `not valid JSON: ${e.message}`}`);
  }
  const dir = dirname(file);
  const admin = typeof doc === 'object' && doc !== null ? (doc as { admin?: { listen?: unknown; tokenFile?: unknown } }).admin : undefined;
  const tokenFile = typeof admin?.tokenFile === 'string' && admin.tokenFile !== '' ? resolve(dir, admin.tokenFile) : undefined;
  const listen = admin?.listen;
  const named = required ? file : `vrouter's default config ${file}`;
  const via = `admin.listen of ${named}`;
  if (typeof listen !== 'string') return { kind: 'unix', path: resolve(dir, 'admin.sock'), from: `the admin.sock next to ${named}`, config: file, tokenFile };
  if (listen.startsWith('unix:')) return { kind: 'unix', path: resolve(dir, listen.slice(5)), from: via, config: file, tokenFile };
  return { kind: 'tcp', origin: httpOrigin(listen.replace(/^localhost:/, '127.0.0.1:'), `admin.listen of ${file}`), from: via, config: file, tokenFile };
}

/** The target as a user would write it: unix:/path or http://host:port. */
export function describeTarget(target: Target): string {
  return target.kind === 'unix' ? `unix:${target.path}` : target.origin;
}
