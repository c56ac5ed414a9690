// The PMD's side of the command channel, driven directly: connection generations (nothing
// of a closed connection reaches the data path), memory tables viewed a window per round
// and applied all or nothing, queues found corrupt staying stopped where they stopped.
import t from 'tap';
import { parseConfig } from '../../src/control/config.ts';
import { dataplaneLayout } from '../../src/control/dataplane-layout.ts';
import { Pmd } from '../../src/dataplane/pmd.ts';
import { closeAll } from '../../src/sys/libc.ts';
import { monotonicMs } from '../../src/sys/monotonic.ts';
import { DOORBELL_SERVING, type PmdCommand, type PmdReply } from '../../src/vhost/dataplane-link.ts';
import { DriverQueue, ethernetFrame, GuestRam, sendFrame } from '../support/virtio-driver.ts';

const quiet = { info() {}, warn() {}, error() {} };

function setup(t: { teardown(fn: () => void): void }, names = ['a']) {
  const config = parseConfig({ ports: names.map((name) => ({ name, socket: `/tmp/pmd-commands-${name}.sock`, bridge: 'br0' })), pmd: { cores: [0] } }, '/', 2);
  const layout = dataplaneLayout(config);
  const pmd = new Pmd(layout.pmds[0], layout.shared, quiet, () => []);
  const late: PmdReply[] = [];
  pmd.onLateReply = (r) => late.push(r);
  const ram = new GuestRam();
  const rx = new DriverQueue(ram, 256, { eventIdx: true });
  const tx = new DriverQueue(ram, 256, { eventIdx: true });
  t.teardown(() => {
    ram.close();
    closeAll(layout.shared.wakers.map((w) => w.wakeFd));
  });
  let id = 0;
  const run = (cmd: PmdCommand) => pmd.execute(++id, cmd);
  const applyMemory = (gen: number) => {
    const answer = run({ t: 'memory', port: 0, gen, regions: [ram.region()] });
    for (let i = 0; i < 100 && pmd.building; i++) pmd.stepBuilds();
    return answer ?? late.pop();
  };
  const startTx = (gen: number, port = 0, queue = tx) => run({ t: 'vring-start', port, gen, vring: 1, layout: queue.layout(), callFd: -1, kickFd: -1, mergeable: true, offloads: 0, inflight: null });
  return { pmd, ram, rx, tx, late, run, applyMemory, startTx };
}

t.test('a command of a closed connection is refused once the port was reset', async (t) => {
  const { pmd, tx, run, applyMemory, startTx } = setup(t);
  t.same(applyMemory(1), { id: 1 }, 'memory of connection 1, answered once viewed');
  t.same(startTx(1), { lastAvailIdx: 0 }, 'its TX vring runs');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  pmd.doorbell[DOORBELL_SERVING] = -1;
  t.equal(pmd.pollOnce(), 1, 'and is polled');
  t.equal(pmd.doorbell[DOORBELL_SERVING], 0, 'the PMD says which port it serves (what a crash is blamed on)');
  t.same(run({ t: 'port-reset', port: 0, gen: 1 }), {}, 'the connection closes');
  t.match(startTx(1), { error: /of an earlier connection/ }, 'a vring-start it had in flight is refused');
  t.match(applyMemory(1), { error: /of an earlier connection/ }, 'so is a memory table');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'nothing of connection 1 is polled');
  t.same(applyMemory(2), { id: 6 }, 'the next connection (2) is accepted');
  t.equal(pmd.pollOnce(), 0, 'and its memory table revives nothing of connection 1');
});

t.test('a newer generation makes the PMD forget the older one', async (t) => {
  const { pmd, tx, applyMemory, startTx } = setup(t);
  applyMemory(1);
  startTx(1);
  t.same(applyMemory(3), { id: 3 }, 'connection 3 arrives (the reset of 1 was never seen)');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'connection 1 queues are gone');
});

t.test('a memory table is built a window per round; a reset cancels it', async (t) => {
  const { pmd, ram, late, run } = setup(t);
  t.equal(run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] }), null, 'answered later');
  t.ok(pmd.building, 'building');
  t.same(run({ t: 'port-reset', port: 0, gen: 1 }), {}, 'reset meanwhile');
  t.notOk(pmd.building, 'the build was dropped');
  t.match(late, [{ id: 1, error: /not applied: port reset/ }], 'and the memory command answered with why');
});

t.test('commands sent behind a table wait for it, in order; a reset refuses them', async (t) => {
  const { pmd, ram, tx, late, run, startTx } = setup(t);
  t.equal(run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] }), null, 'the table: answered once viewed');
  t.equal(startTx(1), null, 'a vring start sent right behind it waits');
  t.equal(run({ t: 'vring-stop', port: 0, gen: 1, vring: 1 }), null, 'so does a stop behind the start');
  t.equal(startTx(1), null, 'and a start again');
  t.same(late, [], 'nothing answered while the table is viewed');
  while (pmd.building) pmd.stepBuilds();
  t.same(late, [{ id: 1 }, { id: 2, lastAvailIdx: 0 }, { id: 3, lastAvailIdx: 0 }, { id: 4, lastAvailIdx: 0 }], 'the table, then the three in the order they came');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 1, 'the vring runs on the new table');
  late.length = 0;
  t.equal(run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] }), null);
  t.equal(run({ t: 'vring-stop', port: 0, gen: 1, vring: 1 }), null, 'a stop behind the next table waits');
  t.same(run({ t: 'port-reset', port: 0, gen: 1 }), {}, 'the port is reset meanwhile');
  t.match(late, [{ id: 6, error: /vring-stop not carried out: port reset/ }, { id: 5, error: /not applied: port reset/ }], 'the waiting stop is refused, and the table');
  t.notOk(pmd.building);
});

t.test('tables of two ports are viewed in turn; a table behind a table waits, and what is behind it', async (t) => {
  const { pmd, ram, tx, late, run, startTx } = setup(t, ['a', 'b']);
  const txB = new DriverQueue(ram, 256, { eventIdx: true });
  run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] });
  startTx(1);
  t.equal(run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] }), null, 'a second table of a, behind its start: held');
  t.equal(startTx(1), null, 'and a start behind it');
  run({ t: 'memory', port: 1, gen: 1, regions: [ram.region()] });
  startTx(1, 1, txB);
  pmd.stepBuilds();
  t.same(late, [{ id: 1 }, { id: 2, lastAvailIdx: 0 }], "a's table, then its start");
  pmd.stepBuilds();
  t.same(late.slice(2), [{ id: 5 }, { id: 6, lastAvailIdx: 0 }], "b's table next (in turn, though a has one pending again), then its start");
  pmd.stepBuilds();
  t.same(late.slice(4), [{ id: 3 }, { id: 4, lastAvailIdx: 0 }], "a's second table, then the start behind it");
  t.notOk(pmd.building);
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 1, "a's frame is taken");
});

t.test('a PMD taking over queues takes no frames until every port\'s are back', async (t) => {
  const { pmd, ram, tx, late, run, applyMemory, startTx } = setup(t);
  pmd.waitForQueues();
  applyMemory(1);
  t.same(startTx(1), { lastAvailIdx: 0 }, 'the vring is handed over');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'its frame waits in the ring');
  const before = monotonicMs();
  const back = run({ t: 'queues-back', port: -1, gen: 0 });
  t.same(Object.keys(back ?? {}), ['resumedAt'], 'every port\'s queues are back');
  t.ok(back!.resumedAt! >= before && back!.resumedAt! <= monotonicMs(), `it says when it took frames again, on the clock every process shares (${back!.resumedAt! - before} ms after the command)`);
  t.equal(pmd.pollOnce(), 1, 'the frame is taken');
  pmd.waitForQueues();
  late.length = 0;
  run({ t: 'memory', port: 0, gen: 1, regions: [ram.region()] });
  startTx(1);
  t.equal(run({ t: 'queues-back', port: -1, gen: 0 }), null, 'told while a table is viewed: it waits for the table and what is behind it');
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'no frame taken meanwhile');
  const beforeLate = monotonicMs();
  while (pmd.building) pmd.stepBuilds();
  const resumedAt = late[2]?.resumedAt ?? NaN;
  t.ok(resumedAt >= beforeLate && resumedAt <= monotonicMs(), 'the late answer says when it took frames again');
  t.same(late, [{ id: 4 }, { id: 5, lastAvailIdx: 1 }, { id: 6, resumedAt }], 'the table, the start, then queues-back answered');
  t.equal(pmd.pollOnce(), 1, 'the frame is taken');
  pmd.waitForQueues();
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'waiting again');
  await new Promise((r) => setTimeout(r, 2050));
  t.equal(pmd.pollOnce(), 1, 'never told, it takes frames after 2 s');
});

t.test('a table that a running vring does not fit is refused as a whole', async (t) => {
  const { pmd, ram, tx, late, run, applyMemory, startTx } = setup(t);
  applyMemory(1);
  startTx(1);
  const moved = { ...ram.region(), userAddr: ram.uvaBase + 2 ** 32 };
  run({ t: 'memory', port: 0, gen: 1, regions: [moved] });
  while (pmd.building) pmd.stepBuilds();
  t.match(late.pop(), { error: /vring 1 does not fit the new memory table/ });
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 1, 'the queue runs on, on the old table');
});

t.test('a queue found corrupt stays stopped, where it stopped, across memory changes', async (t) => {
  const { pmd, tx, run, applyMemory, startTx } = setup(t);
  applyMemory(1);
  startTx(1);
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 1);
  tx.setAvailIdx(tx.availIdx + 1000); // more than the queue size: corrupt
  t.equal(pmd.pollOnce(), 0, 'the corrupt queue is stopped');
  applyMemory(1);
  tx.setAvailIdx(tx.availIdx); // sane again
  sendFrame(tx, ethernetFrame('52:54:00:00:00:0b', '52:54:00:00:00:0a', 60));
  t.equal(pmd.pollOnce(), 0, 'a new memory table does not restart it');
  t.same(run({ t: 'vring-stop', port: 0, gen: 1, vring: 1 }), { lastAvailIdx: 1 }, 'GET_VRING_BASE learns where it stopped');
  t.same(run({ t: 'vring-stop', port: 0, gen: 1, vring: 1 }), {}, 'a vring not running has no position to report');
});
