// A hostile admin client: thousands of connections, connections that never send a request,
// a request whose headers never end, requests that are not HTTP, a path parameter that is not
// valid percent-encoding.
// The supervisor's file descriptors are also the guests' sockets and memory files: none of
// this may take them from a frontend, and the endpoint answers again once it is over.
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { MAX_CONNECTIONS, MAX_PIPELINED } from '../../src/admin/http.ts';
import { adminClient } from '../support/admin-client.ts';
import { processResources, trafficFlows, waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';
const FLOOD = 300;
/**
 * The endpoint's limits in these tests (admin.headersTimeout and admin.stalledAnswerTimeout,
 * 10 s and 30 s unless set): shorter, for the tests to wait out; the code is the same.
 */
const HEADERS_TIMEOUT_MS = 3000;
const STALLED_ANSWER_MS = 6000;
const admin = { headersTimeout: HEADERS_TIMEOUT_MS / 1000, stalledAnswerTimeout: STALLED_ANSWER_MS / 1000 };

// Both tests mostly wait out the endpoint's limits, each on a vrouter of its own: side by side.
t.jobs = 2;

/** A connection to the UNIX socket, when (ms after it was opened) the other end closed it (null while open), and what it answered. */
function openConnection(path: string): { socket: Socket; closedAfter: () => number | null; received: () => string } {
  const started = performance.now();
  let closed: number | null = null;
  let received = '';
  const socket = connect(path);
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = performance.now() - started;
  });
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString('latin1');
  });
  return { socket, closedAfter: () => closed, received: () => received };
}

/** An answer's status line and its JSON body's error. */
function answerOf(text: string): { status: string; error: unknown } {
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  return { status: text.slice(0, text.indexOf('\r\n')), error: body === '' ? null : (JSON.parse(body) as { error: unknown }).error };
}

t.test('an admin client cannot take file descriptors from the guests, nor hold the endpoint', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { cores: [1] }, admin }));
  t.teardown(() => vr.stop());
  const pid = vr.proc.pid!;
  const adminPath = join(vr.dir, 'admin.sock');
  const fdsBefore = processResources(pid).fds;

  const flood = Array.from({ length: FLOOD }, () => openConnection(adminPath));
  t.teardown(() => flood.forEach((c) => c.socket.destroy()));
  await waitFor('the connections past the limit closed', () => flood.filter((c) => c.closedAfter() !== null).length >= FLOOD - MAX_CONNECTIONS, 5000);
  const closedAtOnce = flood.filter((c) => c.closedAfter() !== null).length;
  t.equal(closedAtOnce, FLOOD - MAX_CONNECTIONS, `${FLOOD - MAX_CONNECTIONS} of ${FLOOD} connections closed as they came, ${MAX_CONNECTIONS} kept`);
  const fdsFlooded = processResources(pid).fds;
  t.ok(fdsFlooded <= fdsBefore + MAX_CONNECTIONS + 8, `vrouter's processes hold ${fdsFlooded} fds (${fdsBefore} before): at most ${MAX_CONNECTIONS} more`);
  await waitFor('the refusal in the log', () => vr.stderr().includes(`refused a connection: ${MAX_CONNECTIONS} are open`));
  t.ok(vr.stderr().includes(`refused a connection: ${MAX_CONNECTIONS} are open`), 'the log says why connections are refused');

  // Meanwhile frontends connect, hand over their memory files and eventfds, and forward.
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => (a.close(), b.close()));
  t.equal(await trafficFlows(a, b, 20, MAC_A, MAC_B), 20, 'two frontends attach and forward while the endpoint is full');

  // The kept connections never sent a request: they are closed once they have waited too long.
  await waitFor('the idle connections closed', () => flood.every((c) => c.closedAfter() !== null), HEADERS_TIMEOUT_MS + 5000);
  const kept = flood.map((c) => c.closedAfter()!).sort((x, y) => x - y).slice(closedAtOnce);
  t.ok(kept.every((ms) => ms >= HEADERS_TIMEOUT_MS - 500 && ms <= HEADERS_TIMEOUT_MS + 3000), `the ${MAX_CONNECTIONS} idle connections closed after ${Math.round(kept[0])} to ${Math.round(kept[kept.length - 1])} ms (limit ${HEADERS_TIMEOUT_MS})`);
  t.equal((await adminClient(vr).call('GET', '/ports')).status, 200, 'the endpoint answers again');
});

t.test('a request whose headers never end is cut off; a bad path parameter is a 400', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a'], { pmd: { cores: [1] }, admin }));
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const slow = openConnection(join(vr.dir, 'admin.sock'));
  t.teardown(() => slow.socket.destroy());
  // A header line every half second, never the blank line that ends them. Only until just
  // before the limit: a line written as the endpoint closes fails (EPIPE), and Node then
  // drops the connection with the 408 still unread. The clock here starts before the
  // endpoint's, so no line can cross its close.
  const opened = performance.now();
  slow.socket.write('GET /ports HTTP/1.1\r\nHost: vrouter\r\n');
  for (let k = 0; performance.now() - opened < HEADERS_TIMEOUT_MS - 600; k++) {
    await sleep(500);
    if (slow.closedAfter() === null && performance.now() - opened < HEADERS_TIMEOUT_MS - 100) slow.socket.write(`X-Slow-${k}: 1\r\n`);
  }
  await waitFor('the endpoint to close the slow connection', () => slow.closedAfter() !== null, 6000).catch(() => {});
  const after = slow.closedAfter();
  t.ok(after !== null && after <= HEADERS_TIMEOUT_MS + 3000, `closed after ${after === null ? 'never' : Math.round(after)} ms (limit ${HEADERS_TIMEOUT_MS})`);
  t.match(answerOf(slow.received()), { status: 'HTTP/1.1 408 Request Timeout', error: { code: 'VR_TIMEOUT', field: '', message: /did not arrive in time \(its headers within 3 s, the whole within 30 s\)/ } }, 'and told why first, with the limits configured');

  // What Node cannot read as HTTP gets an answer in the API's format, then the connection closes.
  const unreadable: [string, string, string][] = [
    ['HELLO\r\n\r\n', 'HTTP/1.1 400 Bad Request', 'VR_BAD_REQUEST'],
    [`GET /routes/${'x'.repeat(20_000)} HTTP/1.1\r\nHost: vrouter\r\n\r\n`, 'HTTP/1.1 431 Request Header Fields Too Large', 'VR_TOO_LARGE'],
    ['GET /ports HTTP/1.1\r\nHost: vrouter\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'HTTP/1.1 400 Bad Request', 'VR_BAD_REQUEST'],
  ];
  for (const [request, status, code] of unreadable) {
    const c = openConnection(join(vr.dir, 'admin.sock'));
    t.teardown(() => c.socket.destroy());
    c.socket.write(request);
    await waitFor(`${status}: the connection closed`, () => c.closedAfter() !== null, 5000);
    t.match(answerOf(c.received()), { status, error: { code, field: '' } }, `${JSON.stringify(request.slice(0, 40))}: ${status}, ${code}`);
  }

  // A target Node's parser takes and URL does not: the request's fault, not an internal error.
  for (const target of ['http://[', 'http://%zz/']) {
    const c = openConnection(join(vr.dir, 'admin.sock'));
    t.teardown(() => c.socket.destroy());
    c.socket.write(`GET ${target} HTTP/1.1\r\nHost: vrouter\r\n\r\n`);
    await waitFor(`the answer to GET ${target}`, () => c.received().includes('\r\n\r\n{') && c.received().endsWith('\n'), 5000);
    t.match(answerOf(c.received()), { status: 'HTTP/1.1 400 Bad Request', error: { code: 'VR_BAD_REQUEST', field: '' } }, `GET ${target}: 400, VR_BAD_REQUEST`);
  }
  t.notMatch(vr.stderr(), /admin: GET http:\/\/.* failed/, 'and nothing logged as an internal error');

  // Bodies past 1 MiB: a 413 the client reads, said or found as it comes; a body cut short: no error logged.
  t.match(await api.call('POST', '/routes', 'x'.repeat(2 << 20)), { status: 413, json: { error: { code: 'VR_TOO_LARGE' } } }, 'a body said to be 2 MiB: 413');
  async function* chunks() {
    for (let k = 0; k < 40; k++) yield Buffer.alloc(64 * 1024, 0x20);
  }
  const streamed = await request('http://vrouter/routes', { method: 'POST', body: Readable.from(chunks()), dispatcher: new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } }) });
  t.match({ status: streamed.statusCode, json: await streamed.body.json() }, { status: 413, json: { error: { code: 'VR_TOO_LARGE' } } }, 'a chunked body past 1 MiB: 413');
  const cut = openConnection(join(vr.dir, 'admin.sock'));
  cut.socket.write('POST /routes HTTP/1.1\r\nHost: vrouter\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prefix": ');
  await sleep(100);
  cut.socket.destroy();
  await sleep(200);
  t.notMatch(vr.stderr(), /admin: POST \/routes failed/, 'a body cut short is not logged as an internal error');

  const bad = await api.call('DELETE', '/routes/%E0%A4%A');
  t.match(bad, { status: 400, json: { error: { code: 'VR_INVALID', field: 'prefix', message: /percent-encoding/ } } }, 'malformed percent-encoding: 400 naming the parameter');
  t.equal((await api.call('GET', '/ports')).status, 200, 'the endpoint answers');
  t.ok(vr.alive(), 'vrouter still runs');
});

t.test('an answer its client never reads ends its connection; requests pipelined past the most answered at once end theirs', async (t) => {
  // 20,000 routes: GET /routes answers megabytes, more than the socket holds.
  const routes = Array.from({ length: 20_000 }, (_, i) => ({ prefix: `10.${100 + (i >> 8)}.${i & 255}.0/24`, via: '10.0.1.2' }));
  const vr = await startVrouter({ ports: [{ name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'] }], pmd: { cores: [1] }, pipeline: ['routing'], routes, admin });
  t.teardown(() => vr.stop());
  const adminPath = join(vr.dir, 'admin.sock');

  const reader = connect(adminPath);
  let closed = false;
  let received = '';
  reader.on('error', () => {});
  reader.on('close', () => (closed = true));
  reader.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  reader.pause();
  reader.write('GET /routes HTTP/1.1\r\nHost: localhost\r\n\r\n');
  // Another reads the same answer slowly: a little every 2/3 of the limit, then the rest. It is not cut.
  const slow = connect(adminPath);
  let slowText = '';
  slow.on('error', () => {});
  slow.on('data', (chunk: Buffer) => (slowText += chunk.toString('latin1')));
  slow.pause();
  slow.write('GET /routes HTTP/1.1\r\nHost: localhost\r\n\r\n');
  const sip = async () => {
    await sleep(STALLED_ANSWER_MS * 0.66);
    slow.resume();
    await sleep(30);
    slow.pause();
  };

  const pipelined = openConnection(adminPath);
  pipelined.socket.write('GET /plugins HTTP/1.1\r\nHost: localhost\r\n\r\n'.repeat(3 * MAX_PIPELINED));
  await waitFor('the pipelining connection closed', () => pipelined.closedAfter() !== null || undefined, 5000);
  const answered = pipelined.received().split('HTTP/1.1 200').length - 1;
  t.ok(answered < 3 * MAX_PIPELINED, `${answered} of ${3 * MAX_PIPELINED} pipelined requests answered, then the connection ended`);
  t.match(vr.stderr(), new RegExp(`a client sent more than ${MAX_PIPELINED} requests at once on one connection: closed`));

  // A paused socket sees its end only as it reads: it reads once the endpoint gave up on it
  // (after the slow reader's two sips, 4/3 of the limit).
  await sip();
  await sip();
  slow.resume();
  reader.resume();
  await waitFor('the stalled answer\'s connection closed', () => closed || undefined, 10_000);
  t.ok(received.startsWith('HTTP/1.1 200') && !received.endsWith('\r\n0\r\n\r\n'), `the answer was cut off (${received.length} bytes came, the rest was never sent) and the connection ended`);
  await waitFor('the slow reader\'s whole answer', () => slowText.endsWith('\r\n0\r\n\r\n') || undefined, 10_000);
  t.pass(`a client that read a little every ${STALLED_ANSWER_MS * 0.66} ms got the whole answer (${slowText.length} bytes)`);
  slow.destroy();
  t.equal((await adminClient(vr).call('GET', '/ports')).status, 200, 'the endpoint answers on');
  t.ok(vr.alive());
});
