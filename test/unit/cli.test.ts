// vrouterctl as an operator runs it (the built dist/bin/vrouterctl.js) against a running
// routed vrouter: tables, --json, routes added live and refusals naming the field, config
// diff and dry run, top's snapshots when stdout is a pipe, ports added and removed and a
// queue moved, and the exit status of each
// outcome: 0 done, 1 refused, 2 usage, 3 unreachable, 4 an answer it could not read.
import t, { type Test as Tap } from 'tap';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderSnapshot, snapshot } from '../../src/cli/top.ts';
import { permissionMessage } from '../../src/cli/unreachable.ts';
import { daemonEnv, REPO, startVrouter } from '../support/vrouter-process.ts';
import { ROUTED } from '../support/routed-config.ts';

const CLI = join(REPO, 'dist/bin/vrouterctl.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs vrouterctl with the test's Node; stdout and stderr are pipes, as in a script. */
function ctl(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI, ...args], { env: daemonEnv({ VROUTER_ADMIN: '', VROUTER_TOKEN: '', ...env }), timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** Checks the exit status; on a mismatch, tap shows what vrouterctl printed. */
function exits(t: Tap, run: Run, code: number, what: string): void {
  t.equal(run.code, code, `${what}: exit ${code}`, { stdout: run.stdout, stderr: run.stderr });
}

t.test('against a routed vrouter on its UNIX socket', async (t) => {
  const vr = await startVrouter(ROUTED);
  t.teardown(() => vr.stop());
  const on = ['--socket', join(vr.dir, 'admin.sock')];

  const ports = await ctl([...on, 'ports']);
  exits(t, ports, 0, 'vrouterctl ports');
  const lines = ports.stdout.trimEnd().split('\n');
  t.match(lines[0], /^PORT\s+MODE\s+MTU\s+QUEUES\s+RX PACKETS\s+TX PACKETS\s+DROPS\s+ON$/, 'the header');
  t.same(lines.slice(1).map((l) => l.split(/\s+/)[0]), ['a', 'b', 'c', 'd'], 'one line per port');
  t.match(lines[1], /^a\s+server\s+1500\s+1\s+0\s+0\s+0\s+10\.0\.1\.1\/24 2001:db8:1::1\/64$/);
  t.match(lines[3], /bridge br0$/);
  const rxEnd = lines[0].indexOf('RX PACKETS') + 'RX PACKETS'.length;
  t.same(lines.slice(1).map((l) => /^(\S+\s+){4}\S+/.exec(l)?.[0].length), [rxEnd, rxEnd, rxEnd, rxEnd], 'counts right-aligned under their title');

  const json = await ctl([...on, '--json', 'routes']);
  exits(t, json, 0, 'vrouterctl --json routes');
  const routes = JSON.parse(json.stdout) as { prefix: string; type: string; via?: string[] }[];
  t.match(routes.find((r) => r.prefix === '192.0.2.0/24'), { type: 'static', via: ['10.0.2.2'] }, '--json routes is the endpoint\'s JSON');

  const added = await ctl([...on, 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.3', 'metric', '5']);
  exits(t, added, 0, 'route add');
  t.match(added.stdout, /^\+ routes\s+\{"prefix":"198\.51\.100\.0\/24","via":"10\.0\.2\.3","metric":5\}$/m, 'the diff of the change');
  t.match(added.stdout, /applied live/, 'and that it was applied live');
  const table = await ctl([...on, 'routes']);
  t.match(table.stdout, /^198\.51\.100\.0\/24\s+static\s+5\s+-\s+10\.0\.2\.3$/m, 'routes shows the new route', { stdout: table.stdout });

  const refused = await ctl([...on, 'route', 'add', '203.0.113.0/24', 'via', '172.16.0.1']);
  exits(t, refused, 1, 'a gateway in no connected subnet is refused');
  t.match(refused.stderr, /^vrouterctl: error VR_CONFIG at via: .*172\.16\.0\.1 is in no connected subnet/m, 'the refusal names the field');
  t.equal(refused.stdout, '', 'nothing on stdout without --json');
  const refusedJson = await ctl([...on, '--json', 'route', 'add', '203.0.113.0/24', 'via', '172.16.0.1']);
  t.match(JSON.parse(refusedJson.stdout), { error: { code: 'VR_CONFIG', field: 'via' } }, 'with --json the refusal is on stdout as the endpoint sent it');

  const deleted = await ctl([...on, 'route', 'del', '198.51.100.0/24']);
  exits(t, deleted, 0, 'route del');
  t.match(deleted.stdout, /^- routes\s+\{"prefix":"198\.51\.100\.0\/24"/m);
  const gone = await ctl([...on, 'route', 'del', '198.51.100.0/24']);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /error VR_NOT_FOUND at prefix: no static route to 198\.51\.100\.0\/24/);

  const before = await ctl([...on, 'config', 'show']);
  exits(t, before, 0, 'config show');
  const document = JSON.parse(before.stdout);
  const file = join(vr.dir, 'next.json');
  writeFileSync(file, JSON.stringify({ ...document, routes: [...document.routes, { prefix: '203.0.113.0/24', blackhole: true }] }));
  const diff = await ctl([...on, 'config', 'diff', file]);
  exits(t, diff, 0, 'config diff');
  t.match(diff.stdout, /^\+ routes\s+\{"prefix":"203\.0\.113\.0\/24","blackhole":true\}$/m, 'the route the file adds', { stdout: diff.stdout });
  t.notMatch(diff.stdout, /^- /m, 'nothing removed');
  t.match(diff.stdout, /dry run: it would apply live/, 'and how it would apply');

  const dry = await ctl([...on, 'config', 'apply', file, '--dry-run']);
  exits(t, dry, 0, 'config apply --dry-run');
  t.match(dry.stdout, /nothing changed/, 'says it changed nothing');
  t.same(JSON.parse((await ctl([...on, 'config', 'show'])).stdout), document, 'a dry run changes nothing');
  t.notMatch((await ctl([...on, 'routes'])).stdout, /203\.0\.113\.0/, 'nor the routes in force');

  exits(t, await ctl([...on, 'neighbour', 'add', '10.0.2.9', '52:54:00:00:02:09', 'b']), 0, 'neighbour add');
  const neighbours = await ctl([...on, 'neighbours']);
  t.match(neighbours.stdout, /^ADDRESS\s+MAC\s+INTERFACE\s+PORT\s+OWNER\s+STATE\s+CONFIRMED$/m, 'the neighbours table', { stdout: neighbours.stdout });
  t.match(neighbours.stdout, /^10\.0\.2\.9\s+52:54:00:00:02:09\s+b\s+b\s+b\s+static\s+\S+( \S+)? ago$/m, "a static neighbour, on port b and in b's share");

  const top = await ctl([...on, 'top', '--count', '2']);
  exits(t, top, 0, 'top --count 2');
  t.equal(top.stdout.match(/^vrouter top /gm)?.length, 2, 'two snapshots', { stdout: top.stdout });
  t.notMatch(top.stdout, /\x1b/, 'no terminal escapes when stdout is not a terminal');
  t.match(top.stdout, /^PORT\s+RX PKT\/S\s+TX PKT\/S/m);
  t.match(top.stdout, /^PMD\s+CPU\s+BUSY %\s+RX PKT\/S\s+TX PKT\/S\s+NS\/PKT/m);
  t.match(top.stdout, /^\s+0\s+1\s+\d+\.\d\s+0\s+0\s+-\s+\d+\s+\d+$/m, 'PMD 0 on CPU 1: busy %, no packets, so no ns per packet');
  const topJson = await ctl([...on, '--json', 'top', '--count', '1', '--interval', '0.2']);
  t.match(JSON.parse(topJson.stdout), { ports: { a: { rx_pps: 0, drops: 0 } }, pmds: [{ pmd: 0, cpu: 1, busy_pct: Number, ns_per_packet: null }] }, 'top --json: one object a snapshot');

  const byConfig = await ctl(['--config', join(vr.dir, 'config.json'), 'pmds']);
  exits(t, byConfig, 0, '--config finds the admin.sock next to the file');
  const byEnv = await ctl(['policers'], { VROUTER_ADMIN: `unix:${join(vr.dir, 'admin.sock')}` });
  exits(t, byEnv, 0, '$VROUTER_ADMIN names the socket');
  t.match(byEnv.stdout, /^p\s+srTCM\s+100mbit\s+-\s+0\s+0\s+0\s+inPort=a$/m, 'the policers table');

  // Ports added and removed, a queue moved.
  const portAdded = await ctl([...on, 'port', 'add', 'e', join(vr.dir, 'e.sock'), 'address', '10.0.5.1/24', 'mtu', '9000']);
  exits(t, portAdded, 0, 'port add');
  t.match(portAdded.stdout, /\+ ports\s+\{"name":"e","socket":"[^"]*e\.sock","addresses":\["10\.0\.5\.1\/24"\],"mtu":9000\}/);
  t.match((await ctl([...on, 'ports'])).stdout, /^e\s+server\s+9000\s+1\b.*10\.0\.5\.1\/24$/m, 'the new port in the table');
  exits(t, await ctl([...on, 'port', 'add', 'f', join(vr.dir, 'f.sock'), 'colour', 'red']), 2, 'port add with an unknown word');
  const badMtu = await ctl([...on, 'port', 'add', 'f', join(vr.dir, 'f.sock'), 'mtu', '20']);
  exits(t, badMtu, 1, 'port add with an MTU vrouter refuses');
  t.match(badMtu.stderr, /VR_CONFIG at mtu/);
  const vlanAdded = await ctl([...on, 'port', 'add-vlan', 'e.7', 'e', '7', 'address', '10.0.7.1/24']);
  exits(t, vlanAdded, 0, 'port add-vlan');
  t.match(vlanAdded.stdout, /\+ ports\s+\{"name":"e\.7","type":"vlan","parent":"e","vlan":7,"addresses":\["10\.0\.7\.1\/24"\]\}/);
  t.match((await ctl([...on, 'ports'])).stdout, /^e\.7\s+vlan 7 of e\s+9000\s+0\s.*10\.0\.7\.1\/24$/m, 'the VLAN port in the table: its parent\'s MTU, no queues of its own');
  const parentGone = await ctl([...on, 'port', 'del', 'e']);
  exits(t, parentGone, 1, 'port del of a port with a VLAN port');
  t.match(parentGone.stderr, /VR_CONFIG at ports\[\d+\]\.parent: no port is called "e"/);
  exits(t, await ctl([...on, 'port', 'add-vlan', 'e.8', 'e', 'x']), 1, 'port add-vlan with a VLAN ID that is no number');
  exits(t, await ctl([...on, 'port', 'del', 'e.7']), 0, 'port del of the VLAN port');
  exits(t, await ctl([...on, 'queue', 'move', 'e', '0', '1']), 0, 'queue move to the PMD it is on');
  const noCpu = await ctl([...on, 'queue', 'move', 'e', '0', '5']);
  exits(t, noCpu, 1, 'queue move to a CPU without a PMD');
  t.match(noCpu.stderr, /VR_CONFIG at cpu/);
  exits(t, await ctl([...on, 'port', 'del', 'e']), 0, 'port del');
  exits(t, await ctl([...on, 'port', 'del', 'e']), 1, 'port del of a port that is gone');
  t.ok(vr.alive());
});

t.test('TCP with a token: from --token-file, $VROUTER_TOKEN or the config', async (t) => {
  const port = await freePort();
  const vr = await startVrouter({ ...ROUTED, admin: { listen: `127.0.0.1:${port}`, tokenFile: '{dir}/token' } }, 15000, (dir) => writeFileSync(join(dir, 'token'), 'a-token-long-enough-1234\n'));
  t.teardown(() => vr.stop());
  const url = ['--url', `http://127.0.0.1:${port}`];
  t.equal((await ctl([...url, 'routes'])).code, 0, 'reads need no token');
  const without = await ctl([...url, 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.3']);
  exits(t, without, 1, 'a change without the token is refused');
  t.match(without.stderr, /error VR_UNAUTHORIZED: .*--token-file FILE or \$VROUTER_TOKEN/);
  const withFile = await ctl([...url, '--token-file', join(vr.dir, 'token'), 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.3']);
  exits(t, withFile, 0, 'the token from --token-file');
  const withEnv = await ctl([...url, 'route', 'del', '198.51.100.0/24'], { VROUTER_TOKEN: 'a-token-long-enough-1234' });
  exits(t, withEnv, 0, 'the token from $VROUTER_TOKEN');
  const fromConfig = await ctl(['--config', join(vr.dir, 'config.json'), 'route', 'add', '198.51.100.0/24', 'via', '10.0.2.3']);
  exits(t, fromConfig, 0, 'the admin.listen and tokenFile of --config');
  const pcap = join(vr.dir, 'a.pcapng');
  const captureWithout = await ctl([...url, 'capture', 'a', '-w', pcap, '--seconds', '1']);
  exits(t, captureWithout, 1, 'a capture shows guests\' traffic: refused without the token');
  t.match(captureWithout.stderr, /error VR_UNAUTHORIZED: .*--token-file FILE or \$VROUTER_TOKEN/);
  const captureWith = await ctl([...url, '--token-file', join(vr.dir, 'token'), 'capture', 'a', '-w', pcap, '--seconds', '1']);
  exits(t, captureWith, 0, 'with it, captured');
  t.match(captureWith.stderr, /0 packets written to \S+a\.pcapng; capture ended: 1 s elapsed/);
});

t.test('unreachable: exit 3 and what to do', async (t) => {
  const nowhere = join(REPO, 'no-such-dir', 'admin.sock');
  const missing = await ctl(['--socket', nowhere, 'ports']);
  exits(t, missing, 3, 'no socket at --socket');
  t.match(missing.stderr, `vrouterctl: vrouter is not running at unix:${nowhere} (--socket): there is no socket there. Start it with \`npx vrouter --config FILE\``);
  const port = await freePort();
  const refused = await ctl(['--url', `http://127.0.0.1:${port}`, 'routes']);
  exits(t, refused, 3, 'nothing listening at --url');
  t.match(refused.stderr, /vrouter is not running at http:\/\/127\.0\.0\.1:\d+ \(--url\): nothing listens there/);
  const fromDefault = await ctl(['ports'], { VROUTER_ADMIN: `unix:${nowhere}` });
  t.match(fromDefault, { code: 3, stderr: /\(\$VROUTER_ADMIN\).*or point vrouterctl at it with --socket PATH/ });
});

t.test('an endpoint that is not vrouter\'s: one line and exit 4, never a stack', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouterctl-other-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'other.sock');
  let answer = { status: 400, body: '{"error":null}' };
  const server = createHttpServer((_req, res) => {
    res.writeHead(answer.status, { 'content-type': 'application/json' });
    res.end(answer.body);
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.teardown(() => server.close());
  const nullError = await ctl(['--socket', socket, 'ports']);
  exits(t, nullError, 4, 'an error body without vrouter\'s error: not a refusal by vrouter');
  t.match(nullError.stderr, /^vrouterctl: failed: HTTP 400: \{"error":null\} \(an answer it could not read: is the target vrouter's admin endpoint\?\)\n$/);
  answer = { status: 200, body: '<html>not vrouter</html>' };
  const html = await ctl(['--socket', socket, 'ports']);
  exits(t, html, 4, 'an answer that is not JSON');
  t.match(html.stderr, /^vrouterctl: failed: .+ \(an answer it could not read: is the target vrouter's admin endpoint\?\)\n$/);
  const htmlJson = await ctl(['--socket', socket, '--json', 'ports']);
  exits(t, htmlJson, 4, 'with --json too: not printed as if it were vrouter\'s');
  t.equal(htmlJson.stdout, '', 'nothing on stdout');
  answer = { status: 404, body: '<html>not found</html>' };
  exits(t, await ctl(['--socket', socket, 'ports']), 4, 'another server\'s error page');
  answer = { status: 200, body: '{"unexpected":true}' };
  const shape = await ctl(['--socket', socket, 'ports']);
  exits(t, shape, 4, 'JSON of another shape');
  t.notMatch(shape.stderr, /\n\s+at /, 'no stack');
});

t.test('top: Ctrl-C ends it at once, also while an answer is slow to come', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouterctl-slow-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'slow.sock');
  let asked = 0;
  const server = createHttpServer(() => void asked++); // never answers
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.teardown(() => server.closeAllConnections());
  t.teardown(() => server.close());
  const child = spawn(process.execPath, [CLI, '--socket', socket, 'top'], { env: daemonEnv({ VROUTER_ADMIN: '', VROUTER_TOKEN: '' }), stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10_000;
  while (asked === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  t.ok(asked > 0, 'top asked and waits for its answer');
  const interrupted = performance.now();
  child.kill('SIGINT');
  const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 5000))]);
  if (code === 'hung') child.kill('SIGKILL');
  t.equal(code, 0, `ended by Ctrl-C, exit 0, ${Math.round(performance.now() - interrupted)} ms after it`, { stderr });
  t.notMatch(stderr, /\n\s+at /, 'no stack');
});

t.test('top\'s rates: deltas over the measured interval', async (t) => {
  const port = (rx: number, bytes: number, noRoute: number) => ({
    rx_packets: rx, rx_bytes: bytes, tx_packets: rx, tx_bytes: bytes, queue_errors: 0, offloads: { rx_partial_checksum: 0, tx_partial_checksum: 0, checksums_completed: 0, rx_gso_frames: 0, rx_gso_bytes: 0, tx_gso_frames: 0, tx_gso_bytes: 0, gso_segments: 0 },
    drops: { no_destination: 1 } as never, plugins: { routing: { drops: { no_route: noRoute }, counters: {} } }, queues: [],
  });
  const pmd = (cpu: number, rx: number, tx: number, busyMs: number) => ({ cpu, rx_packets: rx, tx_packets: tx, busy_ms: busyMs, busy_rounds: 0, ns_per_packet: null });
  const before = { at: 1000, ports: { a: port(1000, 64_000, 10), b: port(5, 500, 0) }, pmds: [pmd(1, 1_000_000, 0, 40), pmd(2, 0, 900_000, 0)] };
  const after = { at: 3000, ports: { a: port(3000, 192_000, 410), b: port(0, 0, 0) }, pmds: [pmd(1, 5_000_000, 0, 540), pmd(2, 0, 4_900_000, 30)] };
  const s = snapshot(before, after);
  t.equal(s.seconds, 2);
  t.match(s.ports.a, { rx_pps: 1000, tx_pps: 1000, rx_bps: 512_000, drops_ps: 200, rx_packets: 3000, drops: 411 });
  t.match(s.ports.b, { rx_pps: null, tx_bps: null, drops_ps: 0 }, 'a counter that went down (the daemon restarted) has no rate');
  t.same(s.drops, [{ port: 'a', reason: 'routing.no_route', per_second: 200 }], 'the drop reasons that counted, with their rate');
  // PMD 0 took 4,000,000 frames from guests in 500 ms of bursts; PMD 1 spent 30 ms writing
  // them into guests (handed over by PMD 0), taking none itself.
  t.match(s.pmds, [
    { pmd: 0, cpu: 1, busy_pct: 25, rx_pps: 2_000_000, tx_pps: 0, ns_per_packet: 125 },
    { pmd: 1, cpu: 2, busy_pct: 1.5, rx_pps: 0, tx_pps: 2_000_000, ns_per_packet: null },
  ], 'per PMD: busy % of the interval, packets per second, busy ns per frame taken');
  const restarted = snapshot(after, { ...after, at: 4000, pmds: [pmd(1, 10, 0, 1), pmd(2, 0, 10, 40)] });
  t.match(restarted.pmds[0], { busy_pct: null, rx_pps: null, ns_per_packet: null }, 'counters that went down (the daemon restarted) have no rates');
  const lines = renderSnapshot(s, 'unix:/x', '');
  const header = lines.findIndex((l) => l.startsWith('PMD'));
  t.match(lines[header], /^PMD\s+CPU\s+BUSY %\s+RX PKT\/S\s+TX PKT\/S\s+NS\/PKT\s+RX PACKETS\s+TX PACKETS$/, 'the PMD table\'s columns', { lines });
  t.match(lines[header + 1], /^\s+0\s+1\s+25\.0\s+2,000,000\s+0\s+125\s+5,000,000\s+0$/, 'PMD 0', { lines });
  t.match(lines[header + 2], /^\s+1\s+2\s+1\.5\s+0\s+2,000,000\s+-\s+0\s+4,900,000$/, 'PMD 1: busy, but no frame of its own to divide by', { lines });
});

t.test('permission denied on the socket: whose it is and the ways in', async (t) => {
  // Root opens any socket, so the message is checked as the EACCES handler makes it.
  const dir = mkdtempSync(join(tmpdir(), 'vrouterctl-test-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'admin.sock');
  const server = createServer().listen(path);
  await new Promise((resolve) => server.once('listening', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  chmodSync(path, 0o600);
  const text = permissionMessage(path, 65534);
  t.match(text, new RegExp(`^permission denied on ${path}: the socket is 0600, owned by \\S+ \\(uid ${process.getuid!()}\\) and group \\S+, and vrouterctl runs as \\S+ \\(uid 65534\\)`));
  t.match(text, /Run vrouterctl as \S+ \(`sudo -u \S+ node_modules\/\.bin\/node dist\/bin\/vrouterctl\.js …` from vrouter's directory\) or as root/);
  t.match(text, /"listen": "127\.0\.0\.1:PORT", "tokenFile": "FILE".*--url http:\/\/127\.0\.0\.1:PORT --token-file FILE/);
});

t.test('usage: exit 2, with the usage', async (t) => {
  const none = await ctl([]);
  exits(t, none, 2, 'no arguments');
  t.match(none.stderr, /^vrouterctl: no command given\nusage: vrouterctl \[options\] COMMAND \[ARGS\]/);
  t.match(none.stderr, /Exit status:\n  0  done\n  1  refused/);
  const unknown = await ctl(['frob']);
  exits(t, unknown, 2, 'an unknown command');
  t.match(unknown.stderr, /^vrouterctl: unknown command "frob"\nusage: vrouterctl/);
  const sub = await ctl(['route', 'frob']);
  t.match(sub, { code: 2, stderr: /unknown command "route frob"\nusage: vrouterctl route add PREFIX .*\n\s+vrouterctl route del PREFIX/ });
  const missing = await ctl(['route', 'del']);
  t.match(missing, { code: 2, stderr: /route del needs PREFIX\nusage: vrouterctl route del PREFIX/ });
  const option = await ctl(['routes', '--dry-run']);
  t.match(option, { code: 2, stderr: /--dry-run does not apply to routes/ });
  const files = mkdtempSync(join(tmpdir(), 'vrouterctl-files-'));
  t.teardown(() => rmSync(files, { recursive: true, force: true }));
  writeFileSync(join(files, 'deep.json'), `{"routes":${'['.repeat(20_000)}${']'.repeat(20_000)}}`);
  writeFileSync(join(files, 'twice.json'), '{"routes":[],"ports":[],"routes":[]}');
  t.match(await ctl(['--socket', '/nonexistent.sock', 'config', 'apply', join(files, 'deep.json')]), { code: 2, stderr: /deep\.json: routes(\[0\])+ is nested more than 64 deep/ }, 'a file nested too deep: usage, before anything is sent');
  t.match(await ctl(['--socket', '/nonexistent.sock', 'config', 'apply', join(files, 'twice.json')]), { code: 2, stderr: /twice\.json: routes is given twice in one object/ }, 'a key given twice: usage');
  const unreadable = await ctl(['--socket', '/nonexistent.sock', 'config', 'diff', '/nonexistent.json']);
  t.match(unreadable, { code: 2, stderr: /cannot read \/nonexistent\.json: ENOENT/ }, 'a file that cannot be read is caught before connecting');
  const help = await ctl(['--help']);
  t.match(help, { code: 0, stdout: /^usage: vrouterctl/ });
  t.match(await ctl(['help']), { code: 0, stdout: /^usage: vrouterctl/ }, 'help as a command too');
  // A listing's plural before its singular's subcommand is read as the singular.
  t.match(await ctl(['routes', 'del']), { code: 2, stderr: /route del needs PREFIX\nusage: vrouterctl route del PREFIX/ });
  t.match(await ctl(['neighbors', 'add', '10.0.2.9']), { code: 2, stderr: /neighbour add needs / });
  t.match(await ctl(['routes', 'frob']), { code: 2, stderr: /routes takes no arguments, got "frob"/ }, 'but not a word that is none of them');
});

/** A TCP port nothing listens on (the kernel's pick, released). */
async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}
