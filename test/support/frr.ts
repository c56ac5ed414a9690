// FRR's zebra and bgpd inside a network namespace, as a BGP peer for end-to-end tests: one
// directory per instance holds its configs, pid files, vty sockets, zserv socket and logs,
// so that several instances on one host share nothing. Both daemons run in the foreground
// as children of the test, as user frr, and are stopped by PID.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, chownSync, closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const FRR_DIR = '/usr/lib/frr';

export interface FrrNeighbour {
  address: string;
  remoteAs: number;
}

export interface FrrOptions {
  /** a named network namespace (`ip netns add`), one instance in each: bgpd listens on port 179 */
  netns: string;
  /** a name for logs and the config's hostname */
  name: string;
  asn: number;
  routerId: string;
  neighbours: FrrNeighbour[];
  /** prefixes announced as they are, whether or not a route to them exists */
  networks: string[];
  /** seconds; 3 unless told (the least FRR takes but 0) */
  holdTime?: number;
  /** seconds; 1 unless told */
  keepalive?: number;
}

export type FrrDaemon = 'zebra' | 'bgpd';

export interface Frr {
  netns: string;
  name: string;
  /** the instance's directory: configs, pid files, sockets, logs */
  dir: string;
  pids: Record<FrrDaemon, number>;
  /** one vtysh command against this instance's daemons; its output */
  vtysh(command: string): Promise<string>;
  /** until the session with `peer` is Established; resolves with the milliseconds waited */
  waitEstablished(peer: string, timeoutMs: number): Promise<number>;
  /** `ip -n NETNS route`: the namespace's main table */
  routesInKernel(): Promise<string>;
  /** the last lines of a daemon's log and of what it wrote to stderr */
  logTail(daemon: FrrDaemon, lines?: number): string;
  /** stops bgpd alone (its peers drop the session and withdraw its routes) */
  stopBgp(): Promise<void>;
  /** stops both daemons, waits for them to exit, and removes the directory */
  stop(): Promise<void>;
}

/** Why FRR cannot run here, or null. */
export function frrPrerequisites(): string | null {
  for (const bin of [join(FRR_DIR, 'zebra'), join(FRR_DIR, 'bgpd'), '/usr/bin/vtysh']) {
    try {
      accessSync(bin);
    } catch {
      return `${bin} is missing (scripts/setup-peers.sh installs the Debian package frr)`;
    }
  }
  if (spawnSync('ip', ['-V']).status !== 0) return 'ip (iproute2) is not installed';
  if (!frrAccount()) return 'there is no user frr (the Debian package frr creates it)';
  return null;
}

/**
 * The user the daemons run as. Debian builds FRR with a vty group (frrvty) and its daemons
 * refuse to start as a user outside it ("privs_init: user(root) is not part of vty group
 * specified(frrvty)"); the package puts its user frr in that group.
 */
function frrAccount(): { uid: number; gid: number } | undefined {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('frr:'));
  if (!line) return undefined;
  const [, , uid, gid] = line.split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

export function zebraConfig(o: FrrOptions): string {
  return `hostname ${o.name}-zebra\n!\n`;
}

export function bgpdConfig(o: FrrOptions): string {
  const hold = o.holdTime ?? 3;
  const keepalive = o.keepalive ?? 1;
  return [
    `hostname ${o.name}-bgpd`,
    // the session's changes, and why one closes, in the log
    'debug bgp neighbor-events',
    `router bgp ${o.asn}`,
    ` bgp router-id ${o.routerId}`,
    // FRR 8 sends nothing to an eBGP peer without an outbound policy (RFC 8212) unless told.
    ' no bgp ebgp-requires-policy',
    // `network` announces only prefixes zebra has a route to unless told.
    ' no bgp network import-check',
    ` timers bgp ${keepalive} ${hold}`,
    ...o.neighbours.flatMap((n) => [
      ` neighbor ${n.address} remote-as ${n.remoteAs}`,
      // A peer that was not listening yet is tried again after 1 s, not the default 120 s.
      ` neighbor ${n.address} timers connect 1`,
    ]),
    ' address-family ipv4 unicast',
    ...o.networks.map((p) => `  network ${p}`),
    ' exit-address-family',
    '!',
    '',
  ].join('\n');
}

/** Writes the instance's configs and starts zebra, then bgpd, in the namespace. */
export async function startFrr(o: FrrOptions, readyTimeoutMs = 10000): Promise<Frr> {
  const missing = frrPrerequisites();
  if (missing) throw new Error(`cannot run FRR: ${missing}`);
  const dir = mkdtempSync(join(tmpdir(), `vrouter-frr-${o.name}-`));
  // The daemons, as user frr, make their sockets, pid files and logs here.
  const account = frrAccount()!;
  chownSync(dir, account.uid, account.gid);
  const zserv = join(dir, 'zserv.api');
  writeFileSync(join(dir, 'zebra.conf'), zebraConfig(o));
  writeFileSync(join(dir, 'bgpd.conf'), bgpdConfig(o));

  const children = new Map<FrrDaemon, { proc: ChildProcess; exited: Promise<void>; done: boolean }>();
  const logPath = (d: FrrDaemon) => join(dir, `${d}.log`);
  const stderrPath = (d: FrrDaemon) => join(dir, `${d}.stderr`);
  const tail = (path: string, lines: number) => {
    try {
      return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  };
  const logTail = (d: FrrDaemon, lines = 30) => {
    const log = tail(logPath(d), lines);
    const err = tail(stderrPath(d), lines);
    return `--- ${d} log (${logPath(d)}) ---\n${log || '(empty)'}${err ? `\n--- ${d} stderr ---\n${err}` : ''}`;
  };

  const launch = async (d: FrrDaemon) => {
    const args = [
      '-f', join(dir, `${d}.conf`),
      '-i', join(dir, `${d}.pid`),
      '--vty_socket', dir,
      // no TCP vty (FRR's default is a port per daemon): vtysh uses the unix sockets
      '-P', '0',
      '-z', zserv,
      '-u', 'frr', '-g', 'frr',
      '--log', `file:${logPath(d)}`,
    ];
    const err = openSync(stderrPath(d), 'w');
    const proc = spawn('ip', ['netns', 'exec', o.netns, join(FRR_DIR, d), ...args], { stdio: ['ignore', err, err] });
    closeSync(err);
    const child = { proc, exited: Promise.resolve(), done: false };
    child.exited = new Promise<void>((resolve) => proc.on('exit', () => ((child.done = true), resolve())));
    children.set(d, child);
    // Ready when it listens on its vty socket (and zebra on the zserv socket bgpd connects to).
    const sockets = [join(dir, `${d}.vty`), ...(d === 'zebra' ? [zserv] : [])];
    const deadline = Date.now() + readyTimeoutMs;
    while (!sockets.every((s) => existsSync(s))) {
      if (child.done) throw new Error(`${o.name}: ${d} exited at start (code ${proc.exitCode}, signal ${proc.signalCode})\n${logTail(d)}`);
      if (Date.now() > deadline) throw new Error(`${o.name}: ${d} did not open ${sockets.join(' and ')} within ${readyTimeoutMs} ms\n${logTail(d)}`);
      await sleep(20);
    }
  };

  const kill = async (d: FrrDaemon) => {
    const child = children.get(d);
    if (!child || child.done) return;
    child.proc.kill('SIGTERM');
    const timer = setTimeout(() => child.proc.kill('SIGKILL'), 5000);
    await child.exited;
    clearTimeout(timer);
  };
  const stop = async () => {
    await kill('bgpd');
    await kill('zebra');
    rmSync(dir, { recursive: true, force: true });
  };

  const vtysh = (command: string) =>
    new Promise<string>((resolve, reject) => {
      // vtysh reaches the daemons through their vty sockets: it needs no namespace.
      execFile('vtysh', ['--vty_socket', dir, '-c', command], { encoding: 'utf8', timeout: 10000 }, (error, stdout, stderr) => {
        if (error) reject(new Error(`${o.name}: vtysh -c '${command}' failed (${error.message.split('\n')[0]}):\n${stdout}${stderr}`));
        else resolve(stdout);
      });
    });

  try {
    await launch('zebra');
    await launch('bgpd');
    // Once both answer, each has read its config; a line it refused is only logged
    // ("No such command on config line 9: ...") and the daemon runs on without it.
    await vtysh('show version');
    for (const d of ['zebra', 'bgpd'] as const) {
      const refused = readFileSync(logPath(d), 'utf8').split('\n').filter((l) => /config line \d+/.test(l));
      if (refused.length) throw new Error(`${o.name}: ${d} refused lines of ${join(dir, `${d}.conf`)}:\n${refused.join('\n')}\n--- ${d}.conf ---\n${readFileSync(join(dir, `${d}.conf`), 'utf8')}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }

  const alive = (d: FrrDaemon) => {
    if (children.get(d)!.done) throw new Error(`${o.name}: ${d} has exited\n${logTail(d)}`);
  };

  return {
    netns: o.netns,
    name: o.name,
    dir,
    pids: { zebra: children.get('zebra')!.proc.pid!, bgpd: children.get('bgpd')!.proc.pid! },
    vtysh,
    logTail,
    async waitEstablished(peer, timeoutMs) {
      const start = Date.now();
      let state = '(no answer yet)';
      for (;;) {
        alive('zebra');
        alive('bgpd');
        const out = await vtysh(`show bgp neighbors ${peer} json`);
        const neighbour = (JSON.parse(out) as Record<string, { bgpState?: string; lastResetDueTo?: string }>)[peer];
        state = neighbour ? `${neighbour.bgpState}${neighbour.lastResetDueTo ? ` (last reset: ${neighbour.lastResetDueTo})` : ''}` : `no neighbour ${peer}: ${out.trim()}`;
        if (neighbour?.bgpState === 'Established') return Date.now() - start;
        if (Date.now() - start > timeoutMs) throw new Error(`${o.name}: the session with ${peer} is not Established after ${timeoutMs} ms: ${state}\n${logTail('bgpd')}`);
        await sleep(100);
      }
    },
    routesInKernel: () =>
      new Promise<string>((resolve, reject) => {
        execFile('ip', ['-n', o.netns, 'route'], { encoding: 'utf8', timeout: 10000 }, (error, stdout, stderr) => {
          if (error) reject(new Error(`${o.name}: ip -n ${o.netns} route failed: ${stderr || error.message}`));
          else resolve(stdout);
        });
      }),
    stopBgp: () => kill('bgpd'),
    stop,
  };
}
