// Deaths of the data-plane process, with test frontends (whose timing a test controls): a
// frontend that sets its device up while the data plane is being replaced is refused
// nothing for that, and the new data plane gets its memory and rings and forwards; a
// crash loop is backed off, then the port served at each crash is quarantined; split and
// packed rings resume where they stopped.
import t from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { dataplanePids, trafficFlows, waitFor } from '../support/traffic.ts';
import { startDevice, startPackedDevice } from '../support/vhost-frontend.ts';
import { Req, vringStatePayload } from '../../src/vhost/protocol.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const MAC = { a: '02:00:00:00:00:0a', b: '02:00:00:00:00:0b' };

t.test('a device set up while the data plane restarts is accepted and forwards after it', async (t) => {
  // No spare: the cold start leaves a window of a few hundred ms to set up in.
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  const [first] = dataplanePids(vr.proc.pid!);
  process.kill(first, 'SIGKILL');
  // SET_MEM_TABLE and the vring set-up, each waiting for its ack, while no data plane runs.
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  await waitFor('the new data plane', () => /a new data-plane process \(pid \d+\) runs the PMDs/.test(vr.stderr()) || undefined, 10_000);
  const log = vr.stderr();
  const died = log.search(/the data-plane process died \(signal SIGKILL\)/);
  const table = log.search(/port a: memory table of 1 region/);
  const back = log.search(/a new data-plane process \(pid \d+\) runs the PMDs/);
  t.ok(died >= 0 && died < table && table < back, 'its memory table was taken between the death and the new data plane');
  t.equal(await trafficFlows(a, b, 20, MAC.a, MAC.b), 20, 'a -> b through the new data plane');
  t.equal(await trafficFlows(b, a, 20, MAC.b, MAC.a), 20, 'b -> a');
  t.notMatch(vr.stderr(), /port a: (connection closed|SET_MEM_TABLE:)/, 'port a was never refused nor disconnected');
});

t.test('a data plane started after a death that dies before it is ready: another is started, vrouter serves on', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => b.close());
  const pid = vr.proc.pid!;
  // Its replacement is killed as soon as it is seen, while it loads (a few hundred ms): as
  // the OOM killer might, under the memory pressure that ended the first. Until one such
  // kill comes before the new process is ready (a fast start may win the race).
  let killed = 0;
  for (let attempt = 1; attempt <= 5 && !/did not start/.test(vr.stderr()); attempt++) {
    const running = await waitFor('a data plane running', () => dataplanePids(pid)[0], 15_000);
    process.kill(running, 'SIGKILL');
    const next = await waitFor('its replacement', () => dataplanePids(pid).find((p) => p !== running), 15_000);
    process.kill(next, 'SIGKILL');
    killed++;
    await waitFor('it gone', () => dataplanePids(pid).every((p) => p !== next), 5000);
  }
  await waitFor('the start refused', () => /the data-plane process did not start \(exit code null, signal SIGKILL\): starting another/.test(vr.stderr()), 10_000);
  t.pass(`a new data plane killed before it was ready (${killed} tried)`);
  await waitFor('a data plane that runs the PMDs', () => /a new data-plane process \(pid \d+\) runs the PMDs/.test(vr.stderr()), 20_000);
  t.ok(vr.alive(), 'vrouter runs on');
  t.equal(await trafficFlows(a, b, 20, MAC.a, MAC.b), 20, 'a -> b through the one that started');
  t.notMatch(vr.stderr(), /the data-plane process died: /, 'not ended as a thread that died');
});

t.test('a crash loop: backed off, then the port served at each crash is quarantined', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b']));
  t.teardown(() => vr.stop());
  // Only a has a device: it is the port the PMD serves whenever it dies.
  const a = await startDevice(vr.sockets.a);
  t.teardown(() => a.close());
  await waitFor('a running', () => /port a: vring 1 \(guest tx\) running/.test(vr.stderr()) || undefined, 5000);
  for (let crash = 1; crash <= 3; crash++) {
    const [dataplane] = dataplanePids(vr.proc.pid!);
    // SIGABRT, as a native crash: unlike SIGKILL (the OOM killer, an operator) it counts against the port served.
    process.kill(dataplane, 'SIGABRT');
    await waitFor(`takeover ${crash}`, () => (vr.stderr().match(/took over|runs the PMDs, \d+ ms after/g)?.length === crash ? true : undefined), 10_000).catch((err: Error) => {
      throw new Error(`${err.message} (SIGABRT to pid ${dataplane}); vrouter's log:\n${vr.stderr()}`);
    });
  }
  // The quarantine disconnects a's frontend after the hand-over it came with.
  await waitFor('a disconnected', () => /port a: connection closed: quarantined/.test(vr.stderr()) || undefined, 5000).catch(() => undefined);
  const log = vr.stderr();
  t.match(log, /2 data-plane deaths within 60 s: starting the next one in 100 ms/, 'the second death within a minute waits 100 ms');
  t.match(log, /3 data-plane deaths within 60 s: starting the next one in 200 ms/, 'the third 200 ms');
  t.match(log, /port a: quarantined for 5 s: the data plane died 3 times within 60 s while serving it, last of signal SIGABRT/, 'the third crash serving a quarantines it');
  t.match(log, /port a: connection closed: quarantined/, 'its frontend is disconnected');
  t.notMatch(log, /port b: quarantined/, 'b, never served, is not');
  const ports = (await adminClient(vr).call('GET', '/ports')).json as { name: string; state: { quarantinedForS: number } | null }[];
  const quarantined = ports.find((p) => p.name === 'a')?.state?.quarantinedForS ?? 0;
  t.ok(quarantined > 0 && quarantined <= 5, `GET /ports shows a quarantined for ${quarantined} s more`);
});

t.test('GET_VRING_BASE while the data plane is dead answers where the ring stopped, not the base it started from', async (t) => {
  // No spare: the cold start leaves the frontend's request a few hundred ms to arrive in.
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => (a.close(), b.close()));
  t.equal(await trafficFlows(a, b, 5, MAC.a, MAC.b), 5, 'five frames through, from a base of 0');
  t.equal(a.tx.usedIdx(), 5, "a's TX ring stopped at 5");
  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  a.frontend.send(Req.GET_VRING_BASE, vringStatePayload(1, 0));
  const answer = await a.frontend.reply(10_000);
  t.ok(answer, 'answered');
  t.equal(new DataView(answer!.payload.buffer).getUint32(4, true), 5, 'base 5: where the ring stopped');
  // The log line goes through vrouter's stderr pipe, which may reach us after the socket's answer.
  const resumed = /port a: vring 1 \(guest tx\) running, size 256, resumed from the used ring at 5/;
  await waitFor('the resume logged', () => resumed.test(vr.stderr()) || undefined, 2000).catch(() => undefined);
  t.match(vr.stderr(), resumed, 'read from the used ring by the next data plane');
  // The answer may come before a's RX ring is back: frames for it meanwhile are port_down.
  await waitFor('every queue back', () => /runs the PMDs, \d+ ms after the death of the last; the guests' queues resumed/.test(vr.stderr()) || undefined, 10_000);
  t.equal(await trafficFlows(b, a, 5, MAC.b, MAC.a, 10_000), 5, 'b -> a still flows (a\'s RX ring runs)');
});

t.test('packed rings resume where they stopped after a data-plane death; GET_VRING_BASE meanwhile answers that position', async (t) => {
  const vr = await startVrouter(bridgeConfig(['a', 'b'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  // 10 descriptors, so that the rings are past a lap by the time of each death
  const a = await startPackedDevice(vr.sockets.a, { queueSize: 10 });
  const b = await startDevice(vr.sockets.b);
  t.teardown(() => (a.close(), b.close()));
  t.equal(await trafficFlows(a, b, 8, MAC.a, MAC.b), 8, 'a (packed) -> b');
  t.equal(await trafficFlows(b, a, 8, MAC.b, MAC.a), 8, 'b -> a (packed)');
  a.tx.takeUsed();
  const killDataplane = async (deaths: number) => {
    const [dataplane] = dataplanePids(vr.proc.pid!);
    process.kill(dataplane, 'SIGKILL');
    await waitFor(`data plane ${deaths + 1}`, () => vr.stderr().match(/a new data-plane process \(pid \d+\) runs the PMDs/g)?.length === deaths || undefined, 10_000);
  };
  await killDataplane(1);
  t.equal(await trafficFlows(a, b, 8, MAC.a, MAC.b, 10_000), 8, 'a -> b again, from where the TX ring stopped');
  t.equal(await trafficFlows(b, a, 8, MAC.b, MAC.a, 10_000), 8, 'b -> a again, into the next of a\'s RX buffers');
  a.tx.takeUsed();
  t.equal(a.tx.availIdx, 6, "a's TX ring: 16 one-descriptor chains in a ring of 10, at 6 of wrap 0");
  const [dataplane] = dataplanePids(vr.proc.pid!);
  process.kill(dataplane, 'SIGKILL');
  a.frontend.send(Req.GET_VRING_BASE, vringStatePayload(1, 0));
  const answer = await a.frontend.reply(10_000);
  t.ok(answer, 'answered');
  t.equal(new DataView(answer!.payload.buffer).getUint32(4, true), 6 | (6 << 16), 'base 6 of wrap 0, used the same: where the ring stopped');
  // The control thread's log lines reach stderr through the main thread: after the answer, maybe.
  const resumed = /port a: vring 1 \(guest tx\) running, size 10, resumed from the used ring at 6\b/;
  await waitFor('the resume in the log', () => resumed.test(vr.stderr()) || undefined, 5000).catch(() => undefined);
  t.match(vr.stderr(), resumed, 'read by the next data plane');
  // The answer may come before a's RX ring is back: frames for it meanwhile are port_down.
  await waitFor('every queue back', () => vr.stderr().match(/the guests' queues resumed/g)?.length === 2 || undefined, 10_000);
  t.equal(await trafficFlows(b, a, 8, MAC.b, MAC.a, 10_000), 8, 'b -> a still flows (a\'s RX ring runs)');
  t.equal((await vr.stats()).a.queue_errors, 0, 'no queue errors');
});
