// Why the admin endpoint could not be reached, told so that the operator knows what to do:
// not running (and how to start it), a socket they may not open (whose it is, and the ways
// in), or a daemon that went away mid-request.
import { readFileSync, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { describeTarget, SYSTEM_SOCKET, type Target } from './target.ts';

export function unreachableMessage(target: Target, err: NodeJS.ErrnoException): string {
  const where = `${describeTarget(target)} (${target.from})`;
  const code = err.code ?? '';
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'ENOTSOCK') {
    const why = target.kind === 'tcp' ? 'nothing listens there' : code === 'ENOENT' ? 'there is no socket there' : 'the socket file is there, but no process listens on it';
    return `vrouter is not running at ${where}: ${why}. ${startHint(target)}`;
  }
  if ((code === 'EACCES' || code === 'EPERM') && target.kind === 'unix') return permissionMessage(target.path, process.getuid?.() ?? -1);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return `vrouter at ${where} did not accept the connection in time (is the host right?)`;
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') return `vrouter at ${where} accepted the request but did not answer in time`;
  return `lost the connection to vrouter at ${where}: ${err.message}${code !== '' && !err.message.includes(code) ? ` (${code})` : ''} (did it stop?)`;
}

function startHint(target: Target): string {
  const config = target.config ?? 'FILE';
  const service = target.kind === 'unix' && target.path === SYSTEM_SOCKET ? ', or `sudo systemctl start vrouter`' : '';
  const other = target.from === '--socket' || target.from === '--url' ? '' : ' (or point vrouterctl at it with --socket PATH, --url URL or --config FILE)';
  return `Start it with \`npx vrouter --config ${config}\`${service}${other}.`;
}

/**
 * EACCES on the admin socket: the daemon makes it 0600, for its own user only. Says whose
 * it is (or whose the directory that stops us is), and the ways in.
 */
export function permissionMessage(path: string, uid: number): string {
  let stats: Stats | null = null;
  let blocking = path;
  try {
    stats = statSync(path);
  } catch {
    try {
      blocking = dirname(path);
      stats = statSync(blocking);
    } catch {
      stats = null;
    }
  }
  const me = uid >= 0 ? `${userName(uid)} (uid ${uid})` : 'this user';
  const ways = 'give vrouter a TCP admin endpoint with a token ("admin": {"listen": "127.0.0.1:PORT", "tokenFile": "FILE"}) and use --url http://127.0.0.1:PORT --token-file FILE';
  if (stats === null) return `permission denied on ${path}: vrouterctl runs as ${me}. Run it as the user vrouter runs as, or ${ways}.`;
  const mode = (stats.mode & 0o777).toString(8).padStart(4, '0');
  const owner = userName(stats.uid);
  const what = blocking === path ? `the socket is ${mode}` : `its directory ${blocking} is ${mode}`;
  return `permission denied on ${path}: ${what}, owned by ${owner} (uid ${stats.uid}) and group ${groupName(stats.gid)}, and vrouterctl runs as ${me}. `
    + `Run vrouterctl as ${owner} (\`sudo -u ${owner} node_modules/.bin/node dist/bin/vrouterctl.js …\` from vrouter's directory) or as root, or ${ways}.`;
}

/** A name from /etc/passwd or /etc/group (field 0 name, field 2 id), else the number. */
function lookup(file: string, id: number): string {
  try {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const fields = line.split(':');
      if (fields.length > 2 && Number(fields[2]) === id) return fields[0];
    }
  } catch {
    // No readable database (a container): the number says it.
  }
  return String(id);
}

const userName = (uid: number) => lookup('/etc/passwd', uid);
const groupName = (gid: number) => lookup('/etc/group', gid);
