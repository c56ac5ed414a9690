// The FPM server as zebra's dplane_fpm_nl meets it: frames of netlink route messages over
// TCP, whole, split across writes or several to a write, decode to route events for their
// connection; a bad frame closes that connection alone, with the reason logged.
import { spawnSync } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { FPM_KEEPALIVE_IDLE_MS, FPM_MAX_CONNECTIONS, FpmServer, type FpmEvent, type FpmPeer } from '../../src/uplink/fpm-server.ts';
import { waitFor } from '../support/traffic.ts';
import {
  AF_INET,
  attr,
  concat,
  fpmFrame,
  ip,
  message,
  NHA,
  NLM_F_CREATE,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  routeMessage,
  RTM_NEWNEXTHOP,
  RTN,
  RTPROT_BGP,
  u32,
  u8s,
} from '../support/netlink-messages.ts';

const zebra = { flags: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE };

async function startServer(t: Test) {
  const events = new Map<number, FpmEvent[]>();
  const warnings: string[] = [];
  // What a connection's routes hold, as the route sources keep them: added less removed.
  const held = (id: number) => (events.get(id) ?? []).reduce((n, e) => n + (e.kind === 'route' ? (e.op === 'add' ? 1 : -1) : 0), 0);
  const server = new FpmServer({
    host: '127.0.0.1',
    port: 0,
    onEvents: (evs: FpmEvent[], peer: FpmPeer) => events.set(peer.id, [...(events.get(peer.id) ?? []), ...evs]),
    holds: (peer) => held(peer.id) > 0,
    log: { info: () => {}, warn: (msg: string) => warnings.push(msg) },
  });
  const { port } = await server.listen();
  t.teardown(() => server.close());
  /** A connection and the id the server gave it (connections are numbered in order). */
  let connected = 0;
  const open = async () => {
    const socket: Socket = connect(port, '127.0.0.1');
    t.teardown(() => socket.destroy());
    await new Promise((resolve) => socket.once('connect', resolve));
    const id = ++connected;
    await waitFor(`connection ${id} accepted`, () => events.get(id)?.length);
    return { socket, id, closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) };
  };
  const of = (id: number) => events.get(id) ?? [];
  return { server, port, open, of, warnings };
}

const routes = (evs: FpmEvent[]) => evs.filter((e) => e.kind === 'route');

t.test('frames of route messages become route events of their connection', async (t) => {
  const { open, of, server } = await startServer(t);
  const a = await open();
  t.same(of(a.id), [{ kind: 'sync-start' }], 'a connection opens with sync-start');
  t.same(server.peers.map((p) => p.id), [a.id], 'and is listed');

  a.socket.write(fpmFrame(routeMessage('add', { prefix: '10.1.0.0/16', protocol: RTPROT_BGP, metric: 20, multipath: [{ gateway: '192.0.2.1', ifindex: 2 }, { gateway: '192.0.2.2', ifindex: 3 }] }, zebra)));
  await waitFor('the route', () => routes(of(a.id)).length === 1);
  t.same(routes(of(a.id))[0], {
    kind: 'route', op: 'add', family: 4, prefix: '10.1.0.0/16', nexthops: [{ via: '192.0.2.1', ifindex: 2, weight: 1 }, { via: '192.0.2.2', ifindex: 3, weight: 1 }], nhid: null, metric: 20, table: 254, protocol: RTPROT_BGP, type: 'unicast',
  }, 'an ECMP route from zebra');

  // A route update without route replace: RTM_DELROUTE then RTM_NEWROUTE, in one frame.
  const update = fpmFrame(concat(routeMessage('remove', { prefix: '10.2.0.0/16', protocol: RTPROT_BGP }, zebra), routeMessage('add', { prefix: '10.2.0.0/16', gateway: '192.0.2.3', oif: 2, protocol: RTPROT_BGP }, zebra)));
  // Two frames in one write, the second split across three writes down to single bytes.
  const blackhole = fpmFrame(routeMessage('add', { prefix: '2001:db8::/32', type: RTN.BLACKHOLE, protocol: RTPROT_BGP }, zebra));
  const nexthop = fpmFrame(concat(message(RTM_NEWNEXTHOP, concat(u8s(AF_INET, 0, 0, 0), u32(0), attr(NHA.ID, u32(7)), attr(NHA.GATEWAY, ip('192.0.2.9')), attr(NHA.OIF, u32(4))), zebra), routeMessage('add', { prefix: '10.3.0.0/16', nhid: 7, protocol: RTPROT_BGP }, zebra)));
  a.socket.write(concat(update, blackhole.subarray(0, 1)));
  a.socket.write(blackhole.subarray(1, 3));
  await new Promise((r) => setTimeout(r, 20));
  a.socket.write(concat(blackhole.subarray(3), nexthop));
  await waitFor('five more events', () => of(a.id).length === 7);
  t.same(of(a.id).slice(2).map((e) => (e.kind === 'route' ? `${e.op} ${e.prefix} ${e.type} ${e.nexthops.map((h) => h.via).join(',')} ${e.nhid ?? ''}`.trim() : e.kind === 'nexthop' ? `nexthop ${e.id} ${e.via} ${e.ifindex}` : e.kind)), [
    'remove 10.2.0.0/16 unicast',
    'add 10.2.0.0/16 unicast 192.0.2.3',
    'add 2001:db8::/32 blackhole',
    'nexthop 7 192.0.2.9 4',
    'add 10.3.0.0/16 unicast  7',
  ], 'an update (remove then add), a blackhole split across writes, a nexthop object and a route that uses it');
});

t.test("zebra's connection is probed once idle (TCP keepalive armed), so that one from a host gone down ends", async (t) => {
  const { open, port } = await startServer(t);
  await open();
  // The server's side of the connection, as the kernel has it: its timer is keepalive's.
  const ss = spawnSync('ss', ['-tnoH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
  t.equal(ss.status, 0, `ss ran (${ss.stderr})`);
  const timer = /timer:\(keepalive,(?:(\d+)min)?([\d.]+)(ms|sec)/.exec(ss.stdout);
  t.ok(timer !== null, `keepalive armed: ${ss.stdout.trim()}`);
  const seconds = Number(timer?.[1] ?? 0) * 60 + Number(timer?.[2]) / (timer?.[3] === 'ms' ? 1000 : 1);
  t.ok(seconds > 0 && seconds <= FPM_KEEPALIVE_IDLE_MS / 1000, `the first probe within ${FPM_KEEPALIVE_IDLE_MS / 1000} s of quiet (${seconds} s)`);
});

t.test('a bad frame closes its connection only, with the reason logged', async (t) => {
  const { open, of, warnings } = await startServer(t);
  const good = await open();
  const bad = (bytes: Uint8Array) => async () => {
    const c = await open();
    c.socket.write(bytes);
    await c.closed;
    return c;
  };
  const route = routeMessage('add', { prefix: '10.1.0.0/16', oif: 2 }, zebra);
  const cases: [string, Uint8Array, RegExp][] = [
    ['version 2', fpmFrame(route, { version: 2 }), /FPM version 2 \(only 1 is known\)/],
    ['a protobuf frame', fpmFrame(route, { type: 2 }), /a protobuf FPM message: only netlink is read/],
    ['message type 0', fpmFrame(route, { type: 0 }), /FPM message type 0/],
    ['a length shorter than the header', fpmFrame(route, { length: 3 }), /FPM frame length 3, shorter than its own 4-byte header/],
    ['garbage netlink', fpmFrame(u8s(0xff, 0xff, 0, 0, 24, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8)), /bad netlink in the frame at byte 0: .*nlmsg_len 65535 is past the end/],
    ['a good frame, then a bad one', concat(fpmFrame(route), fpmFrame(message(24, u8s(2, 16, 0, 0)))), /bad netlink in the frame at byte 48: RTM_NEWROUTE at offset 0: 4 bytes where struct rtmsg needs 12/],
    ['a frame whose second message is bad', fpmFrame(concat(routeMessage('remove', { prefix: '10.5.0.0/16' }, zebra), message(24, u8s(2, 16)))), /bad netlink in the frame at byte 0: RTM_NEWROUTE at offset 36/],
  ];
  for (const [what, bytes, reason] of cases) {
    const c = await bad(bytes)();
    const evs = of(c.id);
    const last = evs[evs.length - 1];
    t.match(last, { kind: 'disconnected', reason }, `${what}: the connection is closed, saying why`);
    t.ok(warnings.some((w) => reason.test(w)), `${what}: and the reason is logged`);
  }
  t.same(routes(of(7)).map((e) => e.kind === 'route' && e.prefix), ['10.1.0.0/16'], 'the good frame before a bad one counts');
  t.same(routes(of(8)), [], 'a frame with a bad message is dropped whole: no half of an update');

  good.socket.write(fpmFrame(route));
  await waitFor('the good connection still works', () => routes(of(good.id)).length === 1);
  t.same(of(good.id).map((e) => e.kind), ['sync-start', 'route'], 'the other connection saw nothing of it and carries on');
});

t.test('disconnects: by the peer, and when the server closes', async (t) => {
  const { open, of, server } = await startServer(t);
  const a = await open();
  const b = await open();
  a.socket.end();
  await waitFor('a disconnected', () => of(a.id).some((e) => e.kind === 'disconnected'));
  t.same(of(a.id), [{ kind: 'sync-start' }, { kind: 'disconnected', reason: 'the peer closed the connection' }]);
  await server.close();
  await waitFor('b disconnected', () => of(b.id).some((e) => e.kind === 'disconnected'));
  t.same(of(b.id), [{ kind: 'sync-start' }, { kind: 'disconnected', reason: 'the FPM server is closing' }]);
  t.same(server.peers, [], 'no connection left');
});

t.test('only the peers allowed may connect; the others are refused and counted', async (t) => {
  const warnings: string[] = [];
  const connections: FpmPeer[] = [];
  const server = new FpmServer({
    host: '127.0.0.1',
    port: 0,
    peers: ['127.0.0.2'],
    onEvents: (evs: FpmEvent[], peer: FpmPeer) => {
      if (evs.some((e) => e.kind === 'sync-start')) connections.push(peer);
    },
    log: { info: () => {}, warn: (msg: string) => warnings.push(msg) },
  });
  const { port } = await server.listen();
  t.teardown(() => server.close());
  // Every 127/8 address is local on Linux: a client can pick its source address.
  const from = async (localAddress: string) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress });
    t.teardown(() => socket.destroy());
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    await new Promise((resolve) => socket.once('connect', resolve));
    return { socket, closed };
  };
  for (let k = 0; k < 3; k++) await (await from('127.0.0.1')).closed;
  t.equal(server.refused, 3, 'three connections from 127.0.0.1 refused');
  t.equal(connections.length, 0, 'none of them reached the route events');
  t.equal(warnings.length, 1, `one log line for them all: ${warnings[0]}`);
  t.match(warnings[0], /refused a connection from 127\.0\.0\.1, not in "peers"/);

  const allowed = await from('127.0.0.2');
  await waitFor('the allowed peer connected', () => connections.length === 1);
  t.match(connections[0].remote, /^127\.0\.0\.2:/, 'a connection from 127.0.0.2 is taken');
  t.equal(server.peers.length, 1, 'and listed');

  server.allowPeers(['127.0.0.3']);
  await allowed.closed;
  t.pass('taking the peer off the list closes its connection');
  t.equal(server.peers.length, 0, 'and it is no longer listed');
  server.allowPeers(null);
  await from('127.0.0.1');
  await waitFor('any peer connects once the list is lifted', () => connections.length === 2);
  t.equal(server.refused, 3, 'nothing more refused');
});

/** Sends a route on connection c and waits until its server has it. */
async function announce(c: { socket: Socket; id: number }, of: (id: number) => FpmEvent[], prefix: string) {
  const before = routes(of(c.id)).length;
  c.socket.write(fpmFrame(routeMessage('add', { prefix, gateway: '192.0.2.1', oif: 2, protocol: RTPROT_BGP }, zebra)));
  await waitFor(`the route to ${prefix} of connection ${c.id}`, () => routes(of(c.id)).length > before);
}

t.test('connections past the most kept are refused as they come once each kept one sent routes; those keep their routes', async (t) => {
  const { server, port, open, of, warnings } = await startServer(t);
  const kept = [];
  for (let k = 0; k < FPM_MAX_CONNECTIONS; k++) {
    kept.push(await open());
    await announce(kept[k], of, `198.51.${k}.0/24`);
  }
  const extra = Array.from({ length: 50 }, () => {
    const socket = connect(port, '127.0.0.1');
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    return new Promise<void>((resolve) => socket.once('close', () => resolve()));
  });
  await Promise.all(extra);
  t.pass(`50 connections past the ${FPM_MAX_CONNECTIONS} open were closed`);
  t.equal(server.refused, 50, 'and counted as refused');
  t.equal(server.peers.length, FPM_MAX_CONNECTIONS, `${FPM_MAX_CONNECTIONS} still connected`);
  t.equal(warnings.filter((w) => w.includes(`${FPM_MAX_CONNECTIONS} connections are open`)).length, 1, `one log line for them all: ${warnings[0]}`);
  const first = kept[0];
  await announce(first, of, '198.51.100.0/24');
  t.equal(routes(of(first.id)).length, 2, 'a kept connection still sends routes');
  t.equal(server.evicted, 0, 'none was closed for a newcomer');
  first.socket.destroy();
  await first.closed;
  await open();
  t.equal(server.peers.length, FPM_MAX_CONNECTIONS, 'once one closes, a new one is taken');
});

t.test('a new connection takes the place of the oldest that sent no route: silent ones cannot keep zebra out', async (t) => {
  const { server, open, of, warnings } = await startServer(t);
  // One that sent a route, then silent ones and one that sends only empty frames.
  const zebraBefore = await open();
  await announce(zebraBefore, of, '198.51.100.0/24');
  // Closed by the server: a reset, not an error of the test's.
  const quiet = async () => {
    const c = await open();
    c.socket.on('error', () => {});
    return c;
  };
  const idle: Awaited<ReturnType<typeof quiet>>[] = [];
  for (let k = 1; k < FPM_MAX_CONNECTIONS; k++) idle.push(await quiet());
  idle[0].socket.write(fpmFrame(new Uint8Array(0)));
  // Others send what holds nothing: the removal of a route never sent, a route of another table.
  idle[1].socket.write(fpmFrame(routeMessage('remove', { prefix: '192.0.2.0/24', gateway: '10.0.0.1', oif: 2 })));
  idle[2].socket.write(fpmFrame(routeMessage('add', { prefix: '192.0.2.0/24', gateway: '10.0.0.1', oif: 2, tableAttr: 100 })));
  // And one adds a route and takes it back: it holds nothing.
  idle[3].socket.write(fpmFrame(routeMessage('add', { prefix: '192.0.2.0/24', gateway: '10.0.0.1', oif: 2 })));
  idle[3].socket.write(fpmFrame(routeMessage('remove', { prefix: '192.0.2.0/24', gateway: '10.0.0.1', oif: 2 })));
  await waitFor('their events', () => of(idle[1].id).some((e) => e.kind === 'route') && of(idle[2].id).some((e) => e.kind === 'route') && of(idle[3].id).filter((e) => e.kind === 'route').length === 2);
  t.equal(server.peers.length, FPM_MAX_CONNECTIONS, 'every place taken');
  const zebraNow = await open();
  await idle[0].closed;
  t.pass('the oldest without a route (empty frames are not routes) was closed for it');
  await announce(zebraNow, of, '203.0.113.0/24');
  t.equal(server.peers.length, FPM_MAX_CONNECTIONS, 'still at the most kept');
  await waitFor('the closed one\'s disconnect', () => of(idle[0].id).some((e) => e.kind === 'disconnected'));
  t.ok(server.peers.some((p) => p.id === zebraNow.id) && server.peers.some((p) => p.id === zebraBefore.id), 'both route senders are connected');
  t.same(of(idle[0].id).at(-1), { kind: 'disconnected', reason: `its place was given to a new connection from 127.0.0.1: all ${FPM_MAX_CONNECTIONS} were taken and it held no route` }, 'its consumer is told why it went');
  // Newcomers go on taking the places of the silent ones, oldest first, never a route sender's.
  for (let k = 1; k < idle.length; k++) {
    await quiet();
    await idle[k].closed;
  }
  t.equal(server.evicted, FPM_MAX_CONNECTIONS - 1, `each silent one closed in turn (${server.evicted})`);
  t.ok(server.peers.some((p) => p.id === zebraNow.id) && server.peers.some((p) => p.id === zebraBefore.id), 'the route senders stay');
  t.equal(warnings.filter((w) => w.includes('was closed for one from')).length, 1, `one log line in ten seconds: ${warnings.find((w) => w.includes('was closed for one from'))}`);
  t.equal(server.refused, 0, 'no one refused');
});
