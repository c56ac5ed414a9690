// Packet capture through the admin endpoint, as an operator uses it: GET /ports/NAME/capture
// on a routed vrouter while guests ping and send UDP through it (some of it denied by the
// ACL); the stream, saved to a file, is read back with tshark: both directions, the routing
// next hop and the ACL's deny in the comments, the verdicts. A filter leaves out what it
// should; bad filters are 400s naming the field; one capture per port, two ports at once;
// a full capture ring costs capture records, never traffic. `vrouterctl capture -w FILE`
// writes a file tshark reads, ended by its count or by Ctrl-C.
import t, { type Test as Tap } from 'tap';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';
import { Agent, request } from 'undici';
import { parseCaptureFilter } from '../../src/admin/capture.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { daemonEnv, REPO, startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { icmp4, udp4 } from '../support/frames.ts';
import { adminClient, startStream } from '../support/admin-client.ts';

const ROUTER = { a: '02:00:00:00:0a:01', b: '02:00:00:00:0b:01' };
const GUEST = { a: '52:54:00:00:00:0a', b: '52:54:00:00:00:0b' };
const CONFIG = {
  ports: [
    { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a },
    { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
  ],
  pmd: { cores: [1] },
  pipeline: ['routing', 'acl'],
  neighbours: [
    { address: '10.0.1.2', mac: GUEST.a, port: 'a' },
    { address: '10.0.2.2', mac: GUEST.b, port: 'b' },
  ],
  acl: [{ action: 'deny', protocol: 'udp', dstPort: 7 }],
};

const ping = (seq: number) => icmp4({ src: '10.0.1.2', dst: '10.0.2.2', type: 8, id: 7, seq, payload: 32, srcMac: GUEST.a, dstMac: ROUTER.a });
const pong = (seq: number) => icmp4({ src: '10.0.2.2', dst: '10.0.1.2', type: 0, id: 7, seq, payload: 32, srcMac: GUEST.b, dstMac: ROUTER.b });
const udp = (dstPort: number, k = 0) => udp4({ src: '10.0.1.2', dst: '10.0.2.2', srcPort: 4000 + k, dstPort, payload: 20, srcMac: GUEST.a, dstMac: ROUTER.a });

/** Starts a capture; resolves once the response has begun (the capture runs from then on). */
function capture(vr: StartedVrouter, port: string, query: string) {
  return startStream(vr, `/ports/${port}/capture?${query}`);
}

interface Packet {
  comments: string[];
  verdict: string;
  direction: string;
  src: string;
  dst: string;
  icmpType: string;
  udpPort: string;
}

/** The packets of a pcapng file, as tshark reads them. */
function tshark(file: string): Packet[] {
  const fields = ['frame.comment', 'frame.verdict.ebpf_xdp', 'frame.packet_flags_direction', 'ip.src', 'ip.dst', 'icmp.type', 'udp.dstport'];
  const out = spawnSync('tshark', ['-r', file, '-T', 'fields', ...fields.flatMap((f) => ['-e', f]), '-E', 'occurrence=a', '-E', 'aggregator=|', '-E', 'separator=\t'], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(`tshark failed: ${out.stderr}`);
  return out.stdout.trim().split('\n').filter((l) => l !== '').map((line) => {
    const [comments, verdict, direction, src, dst, icmpType, udpPort] = line.split('\t');
    return { comments: comments === '' ? [] : comments.split('|'), verdict, direction, src, dst, icmpType, udpPort };
  });
}

/** The Interface Statistics Block at the end of a pcapng stream: packets received and lost, comment. */
function statistics(file: Buffer): { received: number; dropped: number; comment: string } | null {
  for (let at = 0; at + 12 <= file.length; ) {
    const type = file.readUInt32LE(at);
    const length = file.readUInt32LE(at + 4);
    if (length < 12) break;
    if (type === 5) {
      const s = { received: -1, dropped: -1, comment: '' };
      for (let o = at + 20; o + 4 <= at + length - 4; ) {
        const code = file.readUInt16LE(o);
        const len = file.readUInt16LE(o + 2);
        if (code === 0) break;
        if (code === 1) s.comment = file.toString('utf8', o + 4, o + 4 + len);
        if (code === 4) s.received = Number(file.readBigUInt64LE(o + 4));
        if (code === 5) s.dropped = Number(file.readBigUInt64LE(o + 4));
        o += 4 + ((len + 3) & ~3);
      }
      return s;
    }
    at += length;
  }
  return null;
}

t.test('the filter language: tcpdump words joined by "and"; mistakes name the field and the word', async (t) => {
  t.match(parseCaptureFilter('host 10.0.1.2 and udp port 53'), { family: 4, protocol: 17, portLo: 53, portHi: 53, host: { family: 4, length: 32 }, src: null, dst: null });
  t.match(parseCaptureFilter('src net 10.0.0.0/8 and dst host 10.0.2.2 and tcp portrange 1000-2000'), { family: 4, protocol: 6, portLo: 1000, portHi: 2000, src: { length: 8 }, dst: { length: 32 } });
  t.match(parseCaptureFilter('icmp6 and net 2001:db8::/32'), { family: 6, protocol: 58, host: { family: 6, length: 32 } });
  t.match(parseCaptureFilter('arp'), { family: 1, protocol: -1 });
  t.match(parseCaptureFilter(''), { family: 0, protocol: -1, portLo: -1, host: null });
  t.match(parseCaptureFilter('proto 47'), { protocol: 47 });
  const refused: [string, RegExp][] = [
    ['host 10.0.1', /after "host".*not an IPv4 address/],
    ['host', /"host" needs a value/],
    ['udp or tcp', /only "and"/],
    ['ip6 and host 10.0.0.1', /contradicts/],
    ['port 70000', /not a port number/],
    ['portrange 9-3', /ends before it starts/],
    ['udp and', /ends with "and"/],
    ['src port 53', /only "port" and "portrange"/],
    ['vlan 5', /"vlan" is not a word of the filter/],
  ];
  for (const [expression, message] of refused) {
    t.throws(() => parseCaptureFilter(expression), { status: 400, code: 'VR_INVALID', field: 'filter', message }, expression);
  }
  t.end();
});

t.test('a capture of a routed port: both directions, the stages\' verdicts, read by tshark', async (t) => {
  const vr = await startVrouter(CONFIG);
  t.teardown(() => vr.stop());
  const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB)];

  const cap = await capture(vr, 'a', 'count=13&seconds=20');
  t.equal(cap.status, 200);
  t.equal(cap.headers['content-type'], 'application/x-pcapng');
  await a.send([ping(1), ping(2), ping(3), ping(4), ping(5), udp(7, 0), udp(7, 1), udp(7, 2)]);
  await waitFor('5 pings on b', () => b.poll().filter((f) => f.ip?.protocol === 1 && f.l4?.type === 8).length >= 5 || undefined, 5000);
  await b.send([pong(1), pong(2), pong(3), pong(4), pong(5)]);
  await waitFor('5 replies on a', () => a.poll().filter((f) => f.ip?.protocol === 1 && f.l4?.type === 0).length >= 5 || undefined, 5000);
  t.equal(b.poll().filter((f) => f.ip?.protocol === 17 && f.l4?.dstPort === 7).length, 0, 'the ACL denied the UDP to port 7');
  const stream = await cap.bytes();
  const file = join(vr.dir, 'a.pcapng');
  writeFileSync(file, stream);
  const packets = tshark(file);
  t.equal(packets.length, 13, `13 packets in the file (${packets.length})`);

  const inbound = packets.filter((p) => p.direction === '0x00000001' || p.direction === '1');
  const outbound = packets.filter((p) => p.direction === '0x00000002' || p.direction === '2');
  t.equal(inbound.length, 8, 'the 8 frames a sent, inbound');
  t.equal(outbound.length, 5, 'the 5 replies written to a, outbound');

  const pings = inbound.filter((p) => p.icmpType === '8');
  t.equal(pings.length, 5);
  for (const p of pings) {
    t.same(p.comments, ['routing: via 10.0.2.2 port b (connected)', 'acl: no change', 'verdict: to port b'], `a ping's trace: ${p.comments.join(' | ')}`);
    t.equal(p.verdict, '4', 'XDP_REDIRECT: to another port');
    t.equal(p.src, '10.0.1.2');
  }
  const denied = inbound.filter((p) => p.udpPort === '7');
  t.equal(denied.length, 3);
  for (const p of denied) {
    t.same(p.comments, ['routing: via 10.0.2.2 port b (connected)', 'acl: dropped: acl_deny', 'verdict: dropped: acl_deny'], `a denied packet's trace: ${p.comments.join(' | ')}`);
    t.equal(p.verdict, '1', 'XDP_DROP');
  }
  for (const p of outbound) {
    t.equal(p.icmpType, '0', 'an echo reply written to a');
    t.equal(p.dst, '10.0.1.2');
    t.same(p.comments, ['written to port a (pmd0)']);
  }
  const stats = statistics(stream);
  t.match(stats, { received: 13, dropped: 0, comment: /capture ended: 13 packets captured; 13 packets written, 0 lost/ }, 'the statistics block at the end');
  const ifName = spawnSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.interface_name', '-c', '1'], { encoding: 'utf8' }).stdout.trim();
  t.equal(ifName, 'a', 'the interface is named after the port');
});

t.test('a filter leaves out what it should; refusals; one capture per port, two ports at once', async (t) => {
  const vr = await startVrouter(CONFIG);
  t.teardown(() => vr.stop());
  const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB)];

  const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } });
  const refusal = async (path: string) => {
    const res = await request(`http://vrouter${path}`, { dispatcher });
    return { status: res.statusCode, json: (await res.body.json()) as { error: { code: string; field: string; message: string } } };
  };
  t.match(await refusal(`/ports/a/capture?filter=${encodeURIComponent('host 10.0.1')}`), { status: 400, json: { error: { code: 'VR_INVALID', field: 'filter', message: /not an IPv4 address/ } } });
  t.match(await refusal('/ports/a/capture?count=0'), { status: 400, json: { error: { field: 'count' } } });
  t.match(await refusal('/ports/a/capture?seconds=100000'), { status: 400, json: { error: { field: 'seconds' } } });
  t.match(await refusal('/ports/zz/capture'), { status: 404, json: { error: { field: 'name' } } });

  // a: only ICMP to or from 10.0.2.2; b at the same time, unfiltered.
  const onA = await capture(vr, 'a', `count=10&seconds=20&filter=${encodeURIComponent('icmp and host 10.0.2.2')}`);
  const onB = await capture(vr, 'b', 'count=12&seconds=20&snap=64');
  t.equal(onA.status, 200, 'a capture of a');
  t.equal(onB.status, 200, 'and one of b at the same time');
  t.match(await refusal('/ports/a/capture'), { status: 409, json: { error: { code: 'VR_BUSY', field: 'name' } } }, 'a second capture of a is refused');
  await a.send([ping(1), udp(9, 1), ping(2), udp(7, 2), udp(9, 3), ping(3), ping(4), ping(5)]);
  await waitFor('5 pings on b', () => b.poll().filter((f) => f.ip?.protocol === 1 && f.l4?.type === 8).length >= 5 || undefined, 5000);
  await b.send([pong(1), pong(2), pong(3), pong(4), pong(5)]);
  await waitFor('5 replies on a', () => a.poll().filter((f) => f.ip?.protocol === 1 && f.l4?.type === 0).length >= 5 || undefined, 5000);

  const fileA = join(vr.dir, 'a.pcapng');
  writeFileSync(fileA, await onA.bytes());
  const packetsA = tshark(fileA);
  t.equal(packetsA.length, 10, 'a: 5 pings in, 5 replies out');
  t.ok(packetsA.every((p) => p.icmpType === '8' || p.icmpType === '0'), `a: nothing but ICMP (${packetsA.map((p) => p.icmpType || `udp ${p.udpPort}`).join(' ')})`);

  const fileB = join(vr.dir, 'b.pcapng');
  writeFileSync(fileB, await onB.bytes());
  const packetsB = tshark(fileB);
  t.equal(packetsB.length, 12, 'b: the 2 UDP to port 9 and the 5 pings written to it, the 5 replies received');
  const outB = packetsB.filter((p) => p.direction.endsWith('2'));
  const inB = packetsB.filter((p) => p.direction.endsWith('1'));
  t.equal(outB.filter((p) => p.udpPort === '9').length, 2, 'b: the UDP the ACL let through, written to b');
  t.equal(outB.filter((p) => p.icmpType === '8').length, 5, 'b: the pings written to b');
  t.equal(inB.length, 5, 'b: the replies received');
  t.ok(inB.every((p) => p.icmpType === '0' && p.comments.includes('routing: via 10.0.1.2 port a (connected)')), 'b: the replies received, routed to a');
  const frameLengths = spawnSync('tshark', ['-r', fileB, '-T', 'fields', '-e', 'frame.cap_len', '-e', 'frame.len'], { encoding: 'utf8' }).stdout.trim().split('\n');
  t.ok(frameLengths.every((l) => Number(l.split('\t')[0]) <= 64), `snap=64 keeps 64 bytes at most (${frameLengths.join(', ')})`);

  // The port is free again once a capture ended.
  const again = await capture(vr, 'a', 'count=1&seconds=1');
  t.equal(again.status, 200, 'a can be captured again');
  const stream = await again.bytes();
  t.match(statistics(stream), { received: 0, dropped: 0, comment: /1 s elapsed/ }, 'it ends after its seconds with nothing seen');
});

t.test('a port removed ends its capture; the port that takes its slot can be captured at once', async (t) => {
  const vr = await startVrouter({ ports: ['a', 'b', 'c'].map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0' })), pmd: { cores: [1] } });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const cap = await capture(vr, 'c', 'count=100&seconds=60');
  t.equal(cap.status, 200);
  const started = Date.now();
  t.equal((await api.call('DELETE', '/ports/c')).status, 200);
  t.equal((await api.call('POST', '/ports', { name: 'd', socket: join(vr.dir, 'd.sock'), bridge: 'br0' })).status, 200, 'd takes the slot c had');
  const stream = await cap.bytes();
  t.ok(Date.now() - started < 10_000, `the capture ended ${Date.now() - started} ms after the port went, not after its 60 s`);
  t.match(statistics(stream), { received: 0, comment: /capture ended: the port was removed/ });
  t.equal((await capture(vr, 'd', 'count=1&seconds=1')).status, 200, 'the new port can be captured at once');

  // Two captures pipelined on one connection, which then closes: the second, queued behind
  // the first, never had a socket of its own; it ends too, and its port is free.
  const connection = connect(join(vr.dir, 'admin.sock'));
  connection.on('error', () => {});
  let received = '';
  connection.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  connection.write('GET /ports/a/capture?seconds=3600 HTTP/1.1\r\nHost: vrouter\r\n\r\nGET /ports/b/capture?seconds=3600 HTTP/1.1\r\nHost: vrouter\r\n\r\n');
  await waitFor('the first capture answered', () => received.startsWith('HTTP/1.1 200'), 5000);
  connection.destroy();
  await waitFor('b free again', async () => {
    const probe = await capture(vr, 'b', 'count=1&seconds=1');
    await probe.bytes();
    return probe.status === 200 || undefined;
  }, 5000);
  t.pass('the pipelined capture of b ended with its connection');
  t.equal((await capture(vr, 'a', 'count=1&seconds=1')).status, 200, 'and a is free');
});

t.test('a port opened again (its MTU changed) ends its capture, which then frees the port', async (t) => {
  const vr = await startVrouter({ ports: ['a', 'b'].map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0' })), pmd: { cores: [1] } });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const cap = await capture(vr, 'a', 'count=100&seconds=60');
  t.equal(cap.status, 200);
  const started = Date.now();
  const document = (await api.call('GET', '/config')).json as { ports: { name: string; mtu?: number }[] };
  document.ports.find((p) => p.name === 'a')!.mtu = 9000;
  t.equal((await api.call('PUT', '/config', document)).status, 200, 'a reopened with MTU 9000');
  const stream = await cap.bytes();
  t.ok(Date.now() - started < 10_000, `the capture ended ${Date.now() - started} ms after the change, not after its 60 s`);
  t.match(statistics(stream), { comment: /capture ended: the port was opened again/ });
  const again = await capture(vr, 'a', 'count=1&seconds=1');
  t.equal(again.status, 200, 'a can be captured again at once');
  await again.bytes();
});

t.test('a bridged port captured: long frames, otherwise copied once from guest to guest, are recorded whole', async (t) => {
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', bridge: 'br0' },
      { name: 'b', socket: '{dir}/b.sock', bridge: 'br0' },
      { name: 'c', socket: '{dir}/c.sock', bridge: 'br0' },
    ],
    pmd: { cores: [1] },
  });
  t.teardown(() => vr.stop());
  const devices = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b), await startDevice(vr.sockets.c)];
  t.teardown(() => devices.forEach((d) => d.close()));
  const [a, b, c] = devices.map((d) => testGuest(d));
  const long = (from: string, k: number) => udp4({ src: '10.0.0.1', dst: '10.0.0.2', srcPort: 5000 + k, dstPort: 9, payload: 1200 + k, srcMac: from, dstMac: 'ff:ff:ff:ff:ff:ff' });
  // b's frames go out to a while a is captured; a's go out to b and c while a is captured.
  const onA = await capture(vr, 'a', 'count=6&seconds=20');
  await b.send([1, 2, 3].map((k) => long(GUEST.b, k)));
  await a.send([4, 5, 6].map((k) => long(GUEST.a, k)));
  for (const [name, guest] of [['a', a], ['b', b], ['c', c]] as const) {
    const want = name === 'a' ? 3 : name === 'b' ? 3 : 6;
    // poll() returns every frame received so far.
    await waitFor(`${want} frames on ${name}`, () => guest.poll().length >= want || undefined, 5000);
    await new Promise((r) => setTimeout(r, 50));
    const all = guest.poll();
    t.equal(all.length, want, `${name}: ${want} frames`);
    t.ok(all.every((f) => f.l4?.checksumOk === true && f.length === 14 + 20 + 8 + 1200 + (f.l4.srcPort! - 5000)), `${name}: every one whole, its UDP checksum good`);
  }
  const file = join(vr.dir, 'bridged.pcapng');
  writeFileSync(file, await onA.bytes());
  const out = spawnSync('tshark', ['-r', file, '-o', 'udp.check_checksum:TRUE', '-T', 'fields', '-e', 'frame.cap_len', '-e', 'udp.checksum.status', '-e', 'udp.srcport'], { encoding: 'utf8' });
  const rows = out.stdout.trim().split('\n').map((l) => l.split('\t'));
  t.equal(rows.length, 6, '6 frames recorded');
  // udp.checksum.status 1: good (0 bad, 2 unverified)
  t.ok(rows.every(([len, status, port]) => Number(len) === 42 + 1200 + Number(port) - 5000 && status === '1'), `each whole, its checksum good (${rows.map((r) => r.join(' ')).join(', ')})`);
});

t.test('a full capture ring costs capture records, never traffic', async (t) => {
  const vr = await startVrouter(CONFIG);
  t.teardown(() => vr.stop());
  const [devA, devB] = [await startDevice(vr.sockets.a, { queueSize: 1024 }), await startDevice(vr.sockets.b, { queueSize: 1024 })];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB, 1000)];
  const cap = await capture(vr, 'a', 'count=100000&seconds=2');
  t.equal(cap.status, 200);
  // 1000 frames at once: the PMD takes them in a few hundred microseconds, many times what
  // the ring holds before the supervisor drains it.
  const n = 1000;
  await a.send(Array.from({ length: n }, (_, k) => udp(9, k)), n);
  await waitFor(`${n} frames on b`, () => b.poll().length >= n || undefined, 10000);
  t.equal(b.poll().length, n, 'every frame went through');
  const stream = await cap.bytes();
  const stats = statistics(stream)!;
  t.ok(stats.dropped > 0, `capture records lost to the full ring: ${stats.dropped}`);
  t.equal(stats.received, n, 'the capture saw every frame, written or lost');
  t.match(stats.comment, /lost to a full capture ring/);
  const file = join(vr.dir, 'full.pcapng');
  writeFileSync(file, stream);
  t.equal(tshark(file).length, n - stats.dropped, 'the file holds the records that were not lost');
  const counters = (await vr.stats()).a;
  t.equal(counters.rx_packets, n, 'a: all received');
  t.equal((await vr.stats()).b.tx_packets, n, 'b: all delivered');
});

const VROUTERCTL = join(REPO, 'dist/bin/vrouterctl.js');

/** vrouterctl capture running in the background, as an operator starts it; resolves once it captures. */
async function ctlCapture(t: Tap, vr: StartedVrouter, args: string[]) {
  const child = spawn(process.execPath, [VROUTERCTL, '--socket', join(vr.dir, 'admin.sock'), 'capture', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: daemonEnv() });
  t.teardown(() => void (child.exitCode === null && child.kill('SIGKILL')));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await waitFor('vrouterctl capturing', () => /capturing on port/.test(stderr) || undefined, 10_000);
  return { child, exit, stderr: () => stderr };
}

t.test('vrouterctl capture -w FILE: ended by its count, or by Ctrl-C; refusals', async (t) => {
  const vr = await startVrouter(CONFIG);
  t.teardown(() => vr.stop());
  const [devA, devB] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b)];
  t.teardown(() => [devA, devB].forEach((d) => d.close()));
  const [a, b] = [testGuest(devA), testGuest(devB)];
  const onSocket = ['--socket', join(vr.dir, 'admin.sock')];
  const ctl = (args: string[]) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
    execFile(process.execPath, [VROUTERCTL, ...onSocket, ...args], { env: daemonEnv() }, (err, _stdout, stderr) => resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stderr }));
  });

  const missing = join(vr.dir, 'zz.pcapng');
  t.match(await ctl(['capture', 'zz', '-w', missing]), { code: 1, stderr: /error VR_NOT_FOUND at name: no port named zz/ }, 'an unknown port: refused');
  t.notOk(existsSync(missing), 'and no file left behind');
  const kept = join(vr.dir, 'kept.pcapng');
  writeFileSync(kept, 'an earlier capture');
  t.match(await ctl(['capture', 'zz', '-w', kept]), { code: 1 }, 'refused, over a file that exists');
  t.equal(readFileSync(kept, 'utf8'), 'an earlier capture', 'which is left as it was');
  t.same(readdirSync(vr.dir).filter((f) => f.endsWith('.vrouterctl')), [], 'and nothing else is left behind');
  // A link is written through, never replaced (as root, -w /dev/stdout replaced /dev/stdout).
  const link = join(vr.dir, 'link.pcapng');
  symlinkSync(kept, link);
  const through = await ctlCapture(t, vr, ['a', '-w', link, '--count', '1', '--seconds', '1']);
  await through.exit;
  t.ok(lstatSync(link).isSymbolicLink(), 'a link stays a link');
  t.equal(readFileSync(kept).subarray(0, 4).readUInt32LE(0), 0x0a0d0d0a, 'and its target holds the capture (a pcapng section header)');
  t.match(await ctl(['capture', 'a']), { code: 2, stderr: /capture needs -w FILE/ }, 'no -w: usage');
  t.match(await ctl(['capture', 'a', '-w', join(vr.dir, 'f'), '--filter', 'udp or tcp']), { code: 1, stderr: /error VR_INVALID at filter: .*only "and"/ }, 'a bad filter: the endpoint\'s refusal');

  const file = join(vr.dir, 'count.pcapng');
  const counted = await ctlCapture(t, vr, ['a', '-w', file, '--count', '10', '--seconds', '20', '--filter', 'icmp']);
  await a.send([ping(1), udp(9, 1), ping(2), ping(3), udp(7, 2), ping(4), ping(5)]);
  await waitFor('5 pings on b', () => b.poll().filter((f) => f.ip?.protocol === 1).length >= 5 || undefined, 5000);
  await b.send([pong(1), pong(2), pong(3), pong(4), pong(5)]);
  t.equal(await counted.exit, 0, 'it ends by itself after 10 packets', { stderr: counted.stderr() });
  t.match(counted.stderr(), /10 packets written to \S+count\.pcapng; capture ended: 10 packets captured/, 'and says so');
  t.equal(statSync(file).mode & 0o777, 0o600, 'the file is its owner\'s only: it holds guests\' traffic');
  const packets = tshark(file);
  t.equal(packets.length, 10, 'tshark reads the 10 packets');
  t.same(packets.filter((p) => p.icmpType === '8').map((p) => p.comments.join(' | ')), Array(5).fill('routing: via 10.0.2.2 port b (connected) | acl: no change | verdict: to port b'), 'the pings with their verdicts');
  t.equal(packets.filter((p) => p.icmpType === '0' && p.comments[0] === 'written to port a (pmd0)').length, 5, 'the replies written to a');

  const stopped = join(vr.dir, 'stopped.pcapng');
  const running = await ctlCapture(t, vr, ['a', '-w', stopped, '--seconds', '60']);
  await a.send([ping(6), ping(7), ping(8)]);
  await waitFor('3 packets in the file', () => statSync(stopped).size > 0 && tshark(stopped).length === 3 || undefined, 5000);
  running.child.kill('SIGINT');
  t.equal(await running.exit, 0, 'Ctrl-C ends it, exit 0', { stderr: running.stderr() });
  t.match(running.stderr(), /3 packets written to \S+stopped\.pcapng; stopped by SIGINT/);
  t.same(tshark(stopped).map((p) => p.icmpType), ['8', '8', '8'], 'the file is whole: tshark reads every packet');
  // The endpoint ends the capture once it sees the client gone.
  let again = await capture(vr, 'a', 'count=1&seconds=1');
  for (let tries = 0; again.status === 409 && tries < 50; tries++) {
    await again.bytes();
    await new Promise((r) => setTimeout(r, 20));
    again = await capture(vr, 'a', 'count=1&seconds=1');
  }
  t.equal(again.status, 200, 'the port can be captured again');
  await again.bytes();
});
