// The daemon's life as an operator sees it: `--check` validates a config without starting
// anything, vrouter stops with the process that started it (npx runs it under `sh -c`,
// which does not pass SIGTERM on), a stop or a reload asked for while it starts waits for
// the start (then stops all of it, or reloads), a stop lets a change under way end, signals
// that reach the data planes too leave them to the supervisor, and `--log-format json`
// makes every line one object.
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLog, EVENTS, NO_EVENT } from '../../src/log.ts';
import { childPids, dataplanePids, sparePids } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { adminClient } from '../support/admin-client.ts';
import { bridgeConfig, daemonEnv, REPO, startVrouter, VROUTER_BIN } from '../support/vrouter-process.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-life-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function writeConfig(dir: string, config: object): string {
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify(config));
  return file;
}

/** Two routed ports, a default route, an ACL: every built-in's checks run on it. */
const routed = (dir: string, gateway = '10.0.2.254') => ({
  ports: [
    { name: 'a', socket: join(dir, 'a.sock'), addresses: ['10.0.1.1/24'] },
    { name: 'b', socket: join(dir, 'b.sock'), addresses: ['10.0.2.1/24'] },
  ],
  pipeline: ['routing', 'acl'],
  routes: [{ prefix: '0.0.0.0/0', via: gateway }],
  acl: [{ action: 'permit' }],
});

const run = (args: string[], env: NodeJS.ProcessEnv = daemonEnv()) => spawnSync(process.execPath, [VROUTER_BIN, ...args], { encoding: 'utf8', timeout: 20000, env });

/** Whether pid is a live process (a zombie waiting for its reaper is not). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0] !== 'Z';
  } catch {
    return false;
  }
}

async function waitFor(what: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!what()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** vrouter started on `config` as this test's child: its stderr so far, and its exit status. */
function spawnVrouter(t: Test, dir: string, config: object): { proc: ChildProcess; stderr: () => string; exited: Promise<number | null> } {
  const proc = spawn(process.execPath, [VROUTER_BIN, '--config', writeConfig(dir, config)], { stdio: ['ignore', 'ignore', 'pipe'], env: daemonEnv() });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  t.teardown(() => void (alive(proc.pid!) && proc.kill('SIGKILL')));
  return { proc, stderr: () => err, exited };
}

t.test('--check: a valid config is summed up in one line, and nothing starts', async (t) => {
  const dir = tempDir(t);
  const file = writeConfig(dir, routed(dir));
  const r = run(['--check', file]);
  t.equal(r.status, 0, `exit status 0 (stderr: ${r.stderr})`);
  t.match(r.stdout, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: valid: 2 ports, 1 PMD \\(CPU \\d+\\), pipeline routing, bridge, acl\\n$`));
  t.same(readdirSync(dir), ['config.json'], 'no socket was created');

  const unitConfig = join(REPO, 'examples/systemd/vrouter.json');
  const example = run(['--check', unitConfig]);
  t.equal(example.status, 0, `the systemd example's config is valid (stderr: ${example.stderr})`);
  t.match(example.stdout, /: valid: 2 ports, .*pipeline bridge\n$/);
});

t.test('--check: a mistake is refused as at start, naming the field', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'config.json');
  writeConfig(dir, { ports: [{ name: 'a', socket: join(dir, 'a.sock'), mtu: 20000 }] });
  const field = run(['--check', file]);
  t.equal(field.status, 2);
  t.match(field.stderr, /^vrouter: error supervisor: invalid configuration: ports\[0\]\.mtu: must be an integer from 68 to 9000, got 20000$/m);
  t.equal(field.stdout, '', 'no summary');

  // Found only when the routing plugin compiles its table (prepare), as at start.
  writeConfig(dir, routed(dir, '10.0.9.254'));
  const gateway = run(['--check', file, '--log-format', 'json']);
  t.equal(gateway.status, 2);
  const line = gateway.stderr.trim().split('\n').map((l) => JSON.parse(l)).find((l) => l.level === 'error');
  t.match(line, { event: 'config.invalid', field: 'routes[0].via', msg: /invalid configuration: routes\[0\]\.via: .*10\.0\.9\.254 is in no connected subnet/ });
  t.same(readdirSync(dir), ['config.json'], 'no socket was created');

  const both = run(['--check', file, '--config', file]);
  t.equal(both.status, 2, '--check and --config together are refused');
  t.match(both.stderr, /give --config or --check, not both/);
  const missing = run(['--check', join(dir, 'nonexistent.json')]);
  t.equal(missing.status, 2);
  t.match(missing.stderr, /invalid configuration: .*nonexistent\.json: cannot read/);
});

/**
 * vrouter started by a shell that waits for it, as `npx vrouter` does; resolves once it is
 * ready, with both pids.
 */
async function startUnderShell(t: Test, dir: string): Promise<{ shell: ChildProcess; vrouter: number; stderr: () => string; closed: Promise<void> }> {
  const file = writeConfig(dir, routed(dir));
  const shell = spawn('sh', ['-c', '"$0" "$1" --config "$2" & echo $!; wait', process.execPath, VROUTER_BIN, file], { stdio: ['ignore', 'pipe', 'pipe'], env: daemonEnv() });
  let out = '';
  let err = '';
  shell.stdout!.setEncoding('utf8').on('data', (c: string) => (out += c));
  // vrouter inherits the shell's stderr: the pipe closes when both are gone.
  const closed = new Promise<void>((resolve) => shell.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c)).on('close', resolve));
  let vrouter = 0;
  t.teardown(() => {
    if (shell.exitCode === null && shell.signalCode === null) shell.kill('SIGKILL');
    if (vrouter > 0 && alive(vrouter)) process.kill(vrouter, 'SIGKILL');
  });
  t.ok(await waitFor(() => /^\d+\n/.test(out), 5000), 'the shell started vrouter');
  vrouter = Number(out.trim());
  t.ok(await waitFor(() => /supervisor: ready/.test(err), 15000), `vrouter is ready:\n${err}`);
  t.ok(existsSync(join(dir, 'a.sock')) && existsSync(join(dir, 'b.sock')), 'its sockets exist');
  return { shell, vrouter, stderr: () => err, closed };
}

for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
  t.test(`vrouter stops when the shell that started it gets ${signal}`, async (t) => {
    const dir = tempDir(t);
    const { shell, vrouter, stderr, closed } = await startUnderShell(t, dir);
    shell.kill(signal);
    t.ok(await waitFor(() => !alive(vrouter), 5000), `vrouter (pid ${vrouter}) exited within 5 s of its parent`);
    await Promise.race([closed, sleep(2000)]);
    t.match(stderr(), /SIGTERM: stopping \(the process that started vrouter, pid \d+, has exited\)/);
    t.match(stderr(), /supervisor: stopped/, 'it stopped cleanly');
    t.notOk(existsSync(join(dir, 'a.sock')) || existsSync(join(dir, 'b.sock')) || existsSync(join(dir, 'admin.sock')), 'its socket files are gone');
  });
}

t.test('SIGTERM while vrouter starts: it stops once its start is done, and leaves no socket or process behind', async (t) => {
  const dir = tempDir(t);
  const { proc, stderr, exited } = spawnVrouter(t, dir, routed(dir));
  // Its children as they come: the data plane, and a spare should one start.
  const children = new Set<number>();
  const watch = setInterval(() => [...dataplanePids(proc.pid!), ...sparePids(proc.pid!)].forEach((pid) => children.add(pid)), 5);
  t.teardown(() => clearInterval(watch));
  // The supervisor's first line: its start has begun, nothing listens yet.
  t.ok(await waitFor(() => /control threads at nice/.test(stderr()), 15000), 'vrouter began its start', { stderr: stderr() });
  proc.kill('SIGTERM');
  const code = await Promise.race([exited, sleep(15000).then(() => 'still running')]);
  clearInterval(watch);
  t.equal(code, 0, 'it exited cleanly', { stderr: stderr() });
  t.match(stderr(), /SIGTERM: stopping, once its start is done[^]*supervisor: ready[^]*supervisor: stopped/, 'stopping, once started');
  t.notMatch(stderr(), /error|cannot start/, 'with no error');
  t.same(readdirSync(dir).filter((f) => f.endsWith('.sock')), [], 'no socket file left: the ports\' nor the admin endpoint\'s');
  t.ok(children.size >= 1 && [...children].every((pid) => !alive(pid)), `its data plane${children.size > 1 ? 's' : ''} ended (${[...children].join(', ')})`);
});

t.test('a data plane that dies before it is ready fails the start: exit 1, saying why, with no port opened and nothing left behind', async (t) => {
  const dir = tempDir(t);
  const { proc, stderr, exited } = spawnVrouter(t, dir, routed(dir));
  // Every child the supervisor starts (the data plane, the spare) is killed as it appears,
  // long before it could map the shared memory; the control thread loads meanwhile.
  const killed = new Set<number>();
  const killer = setInterval(() => {
    for (const pid of childPids(proc.pid!)) {
      try {
        process.kill(pid, 'SIGKILL');
        killed.add(pid);
      } catch {
        // already gone
      }
    }
  }, 2);
  t.teardown(() => clearInterval(killer));
  const code = await Promise.race([exited, sleep(20000).then(() => 'still running')]);
  clearInterval(killer);
  t.equal(code, 1, 'vrouter exited with status 1', { stderr: stderr() });
  t.match(stderr(), /cannot start: the data-plane process did not start \(exit code null, signal SIGKILL\)/, 'saying why');
  t.notMatch(stderr(), /listening on|did not stop within|Abort|FATAL/, 'no port opened, and the control thread, told to stop before it began, stopped', { stderr: stderr() });
  t.notMatch(stderr(), /the data-plane process died/, 'no restart after a death that failed the start');
  t.same(readdirSync(dir).filter((f) => f.endsWith('.sock')), [], 'no socket file left');
  t.ok(killed.size >= 1 && [...killed].every((pid) => !alive(pid)), `its data plane${killed.size > 1 ? 's' : ''} ended (${[...killed].join(', ')})`);
});

t.test('SIGHUP while vrouter starts: the reload is carried out once it has started, not refused', async (t) => {
  const dir = tempDir(t);
  const file = writeConfig(dir, routed(dir));
  const proc = spawn(process.execPath, [VROUTER_BIN, '--config', file], { stdio: ['ignore', 'ignore', 'pipe'], env: daemonEnv() });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  t.teardown(() => void (alive(proc.pid!) && proc.kill('SIGKILL')));
  t.ok(await waitFor(() => /control threads at nice/.test(err), 15000), 'vrouter began its start', { stderr: err });
  const more = routed(dir);
  more.ports.push({ name: 'c', socket: join(dir, 'c.sock'), addresses: ['10.0.3.1/24'] });
  writeConfig(dir, more);
  proc.kill('SIGHUP');
  t.ok(await waitFor(() => /reloaded from .*\(SIGHUP\) \(ports \+1 -0\)/.test(err), 15000), 'the new port applied once vrouter had started', { stderr: err });
  t.match(err, /supervisor: ready[^]*reloaded from/, 'after its start');
  t.notMatch(err, /not reloaded/, 'not refused');
  t.ok(existsSync(join(dir, 'c.sock')), "the new port's socket listens");
  proc.kill('SIGTERM');
  t.ok(await waitFor(() => !alive(proc.pid!), 10000), 'and it stops');
});

t.test('SIGTERM while a change is applied: the change ends and is answered, then all of it stops; none is taken after', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b']));
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const adding = api.call('POST', '/ports', { name: 'c', socket: join(vr.dir, 'c.sock'), bridge: 'br0' });
  // The control thread opened its socket: the change is under way (the PMDs restart on it next).
  t.ok(await waitFor(() => /port c: listening/.test(vr.stderr()), 10000), 'the port being added', { stderr: vr.stderr() });
  vr.proc.kill('SIGTERM');
  const answer = await adding;
  t.match(answer, { status: 200, json: { mode: 'restart' } }, 'the change is answered: done');
  const late = await api.call('POST', '/ports', { name: 'd', socket: join(vr.dir, 'd.sock'), bridge: 'br0' }).catch((err: Error) => ({ status: 0, text: err.message }));
  t.ok(late.status === 503 || late.status === 0, `a change asked for once it stops: refused (503) or not taken at all (${late.status} ${late.text.slice(0, 120)})`);
  t.ok(await waitFor(() => !vr.alive(), 15000), 'vrouter exited');
  t.match(vr.stderr(), /supervisor: stopped/, 'cleanly');
  t.notMatch(vr.stderr(), /error|stuck/, 'with no error', { stderr: vr.stderr() });
  t.same(readdirSync(vr.dir).filter((f) => f.endsWith('.sock')), [], "no socket left: the new port's, the others', the admin endpoint's");
});

t.test('a PMD that keeps dying ends vrouter: exit 1, saying why, and no socket or process left behind', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b']));
  t.teardown(() => vr.stop());
  const children = [...dataplanePids(vr.proc.pid!), ...sparePids(vr.proc.pid!)];
  const exited = new Promise<number | null>((resolve) => vr.proc.once('exit', (code) => resolve(code)));
  // SIGUSR2 ends PMD 0 as a crash would: the sixth within a minute is one too many.
  for (let k = 1; k <= 6 && vr.alive(); k++) {
    vr.proc.kill('SIGUSR2');
    await waitFor(() => (vr.stderr().match(/pmd0 exited with code|PMD restarts within/g) ?? []).length >= k || !vr.alive(), 10000);
  }
  t.equal(await Promise.race([exited, sleep(15000).then(() => 'still running')]), 1, 'vrouter exited with status 1');
  t.match(vr.stderr(), /pmd0 died: .*6 PMD restarts within 60 s/, 'saying why');
  t.same(readdirSync(vr.dir).filter((f) => f.endsWith('.sock')), [], "no socket file left, the admin endpoint's neither");
  t.ok(await waitFor(() => children.every((pid) => !alive(pid)), 5000), `its data plane and spare ended (${children.join(', ')})`);
});

t.test("signals to vrouter's whole group (Ctrl-C, a terminal's hang-up, systemd's stop, pkill) leave its data planes to the supervisor", async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b']));
  t.teardown(() => vr.stop());
  const children = [...dataplanePids(vr.proc.pid!), ...sparePids(vr.proc.pid!)];
  t.equal(children.length, 2, 'a data plane and a spare');
  // What `pkill -USR1 vrouter` sends (it matches their names), and a terminal or a group kill.
  for (const signal of ['SIGUSR1', 'SIGUSR2', 'SIGHUP', 'SIGINT', 'SIGTERM'] as const) for (const pid of children) process.kill(pid, signal);
  await sleep(1000);
  t.ok(children.every((pid) => alive(pid)), 'both go on');
  t.notMatch(vr.stderr(), /died|Debugger listening/, 'neither died, nor opened an inspector (SIGUSR1)', { stderr: vr.stderr() });
  // systemd's stop: SIGTERM to every process of the service at once.
  const exited = new Promise<number | null>((resolve) => vr.proc.once('exit', (code) => resolve(code)));
  for (const pid of [vr.proc.pid!, ...children]) process.kill(pid, 'SIGTERM');
  t.equal(await Promise.race([exited, sleep(15000).then(() => 'still running')]), 0, 'the supervisor stops them, cleanly');
  t.notMatch(vr.stderr(), /died|dropped/, 'no data plane died under it', { stderr: vr.stderr() });
  t.ok(await waitFor(() => children.every((pid) => !alive(pid)), 5000), 'and they are gone');
});

t.test('the data plane and its spare end at once when the supervisor is killed', async (t) => {
  const dir = tempDir(t);
  const proc = spawn(process.execPath, [VROUTER_BIN, '--config', writeConfig(dir, routed(dir))], { stdio: ['ignore', 'ignore', 'pipe'], env: daemonEnv() });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  t.teardown(() => void (alive(proc.pid!) && proc.kill('SIGKILL')));
  t.ok(await waitFor(() => /a spare data plane \(pid \d+\) is loaded/.test(err), 15000), `vrouter is ready, its spare loaded:\n${err}`);
  const children = [...dataplanePids(proc.pid!), ...sparePids(proc.pid!)];
  t.equal(children.length, 2, 'a data plane and a spare');
  // Orphans: nothing else would stop their PMDs polling the guests' queues.
  proc.kill('SIGKILL');
  t.ok(await waitFor(() => children.every((pid) => !alive(pid)), 1000), `both ended within a second: ${children.map((pid) => `${pid} ${alive(pid) ? 'alive' : 'gone'}`).join(', ')}`);
  await sleep(200);
  t.notMatch(err, /FATAL|Abort/, 'and neither aborted');
});

t.test('--log-format json: every line of every thread is one object', async (t) => {
  const dir = tempDir(t);
  const file = writeConfig(dir, routed(dir));
  const proc = spawn(process.execPath, [VROUTER_BIN, '--config', file, '--log-format', 'json'], { stdio: ['ignore', 'ignore', 'pipe'], env: daemonEnv() });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  t.ok(await waitFor(() => /"msg":"ready: /.test(err), 15000), `vrouter is ready:\n${err}`);

  const device = await startDevice(join(dir, 'a.sock'));
  t.ok(await waitFor(() => /vring 1 .*running/.test(err), 5000), 'the frontend brought its vrings up');
  device.close();
  t.ok(await waitFor(() => /connection closed/.test(err), 5000), 'the frontend is gone');
  proc.kill('SIGUSR1');
  t.ok(await waitFor(() => /"event":"stats"/.test(err), 5000), 'SIGUSR1: counters');
  proc.kill('SIGTERM');
  t.equal(await exited, 0, 'stopped cleanly');

  const lines = err.split('\n').slice(0, -1);
  t.equal(err.at(-1), '\n', 'the last line is whole');
  const records = lines.map((line) => {
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      t.fail(`not a JSON line: ${line}`);
      return {};
    }
  });
  const known = new Set<string>([...Object.keys(EVENTS), NO_EVENT]);
  for (const r of records) {
    const problems = [
      typeof r.time === 'string' && !Number.isNaN(Date.parse(r.time)) && r.time === new Date(r.time).toISOString() ? '' : 'time',
      ['info', 'warn', 'error'].includes(r.level as string) ? '' : 'level',
      typeof r.thread === 'string' && r.thread !== '' ? '' : 'thread',
      known.has(r.event as string) ? '' : 'event',
      typeof r.msg === 'string' ? '' : 'msg',
    ].filter(Boolean);
    if (problems.length > 0) t.fail(`${problems.join(', ')} missing or wrong in ${JSON.stringify(r)}`);
  }
  const threads = new Set(records.map((r) => r.thread));
  for (const thread of ['supervisor', 'vhost', 'pmd0', 'routing']) t.ok(threads.has(thread), `lines from ${thread}`);
  const find = (msg: RegExp) => records.find((r) => msg.test(r.msg as string));
  t.match(find(/^port a: frontend connected/), { thread: 'vhost', level: 'info', event: 'frontend.connected', port: 'a' }, 'a frontend connecting is an event of the vhost thread');
  t.match(find(/^port a: connection closed/), { thread: 'vhost', event: 'frontend.gone', port: 'a' });
  t.match(find(/^ready: /), { thread: 'supervisor', event: 'vrouter.ready' });
  t.match(find(/^polling on CPU/), { thread: 'pmd0', event: 'pmd.started' }, 'PMD lines (written by the supervisor) are json too');
  t.ok(records.some((r) => r.event === 'vring.started'), 'a vring started');
  t.ok(records.some((r) => r.event === 'features.negotiated'), 'features negotiated');
  t.match(find(/^counters$/), { event: 'stats', ports: { a: { rx_packets: Number } }, pmds: Array }, 'the counters are fields of the line');
  t.match(find(/^SIGTERM: stopping$/), { event: 'vrouter.stopping', signal: 'SIGTERM', parentExited: false });
  t.match(find(/^stopped$/), { event: 'vrouter.stopped' });
});

t.test('a log format that is not text or json is refused', async (t) => {
  const flag = run(['--log-format', 'xml']);
  t.equal(flag.status, 2);
  t.match(flag.stderr, /--log-format must be text or json, got "xml"/);
  const env = run(['--check', '/nonexistent'], daemonEnv({ VROUTER_LOG_FORMAT: 'yaml' }));
  t.equal(env.status, 2);
  t.match(env.stderr, /VROUTER_LOG_FORMAT must be text or json, got "yaml"/);
});

t.test('log lines in both formats, rate-limited alike', async (t) => {
  let clock = 0;
  const lines: string[] = [];
  const json = createLog('vhost', (l) => lines.push(l), () => clock, 'json');
  json.info('port a: frontend connected: pid 7', 'frontend.connected', { port: 'a', pid: 7, features: 0x1n, msg: 'a field named msg' });
  const first = JSON.parse(lines[0]);
  t.match(first, { level: 'info', thread: 'vhost', event: 'frontend.connected', msg: 'port a: frontend connected: pid 7', port: 'a', pid: 7, features: '1', _msg: 'a field named msg' });
  t.equal(first.time, new Date(first.time).toISOString(), 'time is ISO-8601');
  t.same(Object.keys(first).slice(0, 5), ['time', 'level', 'thread', 'event', 'msg'], 'the fixed keys come first');
  json.warn('no event given');
  t.equal(JSON.parse(lines[1]).event, NO_EVENT);
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  json.error('fields that JSON cannot hold', 'vrouter.failed', { cycle });
  t.match(JSON.parse(lines[2]), { event: 'vrouter.failed', msg: 'fields that JSON cannot hold', fieldsError: String });

  lines.length = 0;
  for (let i = 0; i < 30; i++) json.warn(`port a: refused frame ${i}`);
  t.equal(lines.length, 20, 'a burst of 20, then held back');
  clock += 1000;
  json.warn('port a: refused frame 99');
  t.match(JSON.parse(lines.at(-1)!), { msg: 'port a: refused frame 99', suppressed: 10 }, 'json: the count held back is a field');

  const text: string[] = [];
  const plain = createLog('vhost', (l) => text.push(l), () => clock, 'text');
  for (let i = 0; i < 30; i++) plain.warn(`port a: refused frame ${i}`, 'frontend.refused', { i });
  clock += 1000;
  plain.warn('port a: refused frame 99', 'frontend.refused');
  t.equal(text[0], 'vrouter: warn vhost: port a: refused frame 0\n', 'text lines do not change with an event or fields');
  t.equal(text.at(-1), 'vrouter: warn vhost: port a: refused frame 99 (and 10 more like it, not shown)\n');
});
