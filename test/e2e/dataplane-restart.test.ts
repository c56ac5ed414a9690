// The data-plane process killed (SIGKILL) during a guest's ping flood: the supervisor
// keeps the guests' connections, the spare data plane takes over (or, without one, a new
// one starts) and gets the same fds, vring positions and shared state. QEMU sees no
// disconnect; the loss is bounded and reported, and the counters carry on from where they
// were. A frontend that shrinks its guest memory under the data plane (SIGBUS): it alone is
// found and quarantined. And an upgrade during a ping flood.
import t, { type Test } from 'tap';
import { bootGuest, guestPrerequisites, type RunningGuest } from './lib/guest.ts';
import { bridgeConfig, startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';
import { dataplanePids, sparePids, waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { adminClient } from '../support/admin-client.ts';
import { vrouterctl } from './lib/vrouterctl.ts';
import * as sys from '../../src/sys/libc.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

/** Guests on ports a and b; a floods b with pings, 50 a second for 6 s, then pings 10 times more. Resolves once the flood began. */
async function pingFlood(t: Test, vr: StartedVrouter): Promise<{ a: RunningGuest; b: RunningGuest }> {
  const b = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_wait_peer 10.0.0.2 60; sleep 45', timeoutS: 100 });
  t.teardown(() => b.kill());
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    script: 'vr_wait_peer 10.0.0.3 60 && echo FLOOD-START && vr_ping 10.0.0.3 300 56 0.02; vr_ping 10.0.0.3 10',
    timeoutS: 100,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/FLOOD-START/, 60000);
  return { a, b };
}

t.test('the data-plane process killed during a ping flood', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const supervisor = vr.proc.pid!;
  const [first] = dataplanePids(supervisor);
  const [spare] = sparePids(supervisor);
  t.ok(first !== undefined, `the supervisor (pid ${supervisor}) runs a child named vrouter-dataplane (pid ${first})`);
  t.ok(spare !== undefined, `and a spare, vrouter-dataplane-spare (pid ${spare})`);
  const { a, b } = await pingFlood(t, vr);
  await new Promise((r) => setTimeout(r, 2000));
  const before = await vr.stats();
  process.kill(first, 'SIGKILL');
  const restarted = await waitFor('the spare to take over', () => /the spare data plane \(pid (\d+)\) took over, (\d+) ms after/.exec(vr.stderr()) ?? undefined, 10000);
  // The log as it is when the flood ended, both guests still running.
  await a.waitForConsole(/VR-RESULT[^\n]*test=ping/, 30000);
  const during = vr.stderr();
  // a is done: b, which only answered, has nothing more to do.
  const ra = await a.done;
  b.kill();
  const rb = await b.done;
  const log = vr.stderr();
  t.match(log, /the data-plane process died \(signal SIGKILL\)/, 'the supervisor saw the data plane die, and how');
  const second = Number(restarted[1]);
  t.equal(second, spare, `the spare (pid ${second}) took over`);
  t.same(dataplanePids(supervisor), [second], 'it is the data plane now, named so');
  const [next] = await waitFor('a new spare', () => (sparePids(supervisor).length === 1 ? sparePids(supervisor) : undefined), 10000);
  t.ok(next !== first && next !== second, `and a new spare was started (pid ${next})`);
  t.equal(vr.proc.pid, supervisor, 'the supervisor kept running');
  for (const port of ['a', 'b']) {
    t.equal(log.match(new RegExp(`port ${port}: frontend connected`, 'g'))?.length, 1, `port ${port}: QEMU connected once and never again`);
    t.notMatch(during, new RegExp(`port ${port}: connection closed`), `port ${port}: no disconnect while the guests ran`);
  }
  for (const [name, r] of [['a', ra], ['b', rb]] as const) t.notMatch(r.console, /\[qemu\][\s\S]*(Failed to read msg|vhost.*(disconnect|lost))/i, `QEMU ${name} logged no vhost-user trouble`);
  t.match(log, /port b: vring 1 \(guest tx\) running, size 256, resumed from the used ring/, "b's queues resumed where its used ring said");
  const [flood, after] = ra.results.filter((r) => r.test === 'ping');
  const lost = Number(flood?.sent) - Number(flood?.recv);
  t.ok(flood && lost >= 0 && lost <= 25, `loss bounded: ${lost} of ${flood?.sent} pings (500 ms at 50/s is 25)`, { console: ra.console });
  t.equal(after?.loss_pct, '0', 'after the restart: 0 % loss');
  const end = await vr.stats();
  for (const port of ['a', 'b'] as const) {
    t.ok(end[port].rx_packets > before[port].rx_packets && end[port].tx_packets > before[port].tx_packets, `${port}: counters kept (rx ${before[port].rx_packets} -> ${end[port].rx_packets}), not reset by the restart`);
  }
  const info = (await adminClient(vr).call('GET', '/dataplane')).json;
  t.match(info, { pid: second, deaths: 1, lastDeath: { how: 'signal SIGKILL', restartMs: Number(restarted[2]) } }, `GET /dataplane: one death, the hand-over's ${restarted[2]} ms as the log says`);
  t.comment(`data plane back ${restarted[2]} ms after its death; ${lost} of ${flood?.sent} flood pings lost`);
});

t.test('a frontend shrinks its guest memory under the data plane: it is found and quarantined, the guests on the other ports resume', async (t) => {
  // Without a spare: the cold start of a data plane is the other way back.
  const vr = await startVrouter(bridgeConfig(['a', 'b', 'c'], { pmd: { spare: false } }));
  t.teardown(() => vr.stop());
  const { a, b } = await pingFlood(t, vr);
  // c: a frontend whose memory file cannot be sealed (as DPDK virtio-user's), accepted
  // under the default memoryPolicy "warn", with its rings running.
  const c = await startDevice(vr.sockets.c, { unsealable: true });
  t.teardown(() => c.close());
  await waitFor('c running', () => /port c: vring 1 \(guest tx\) running/.test(vr.stderr()), 5000);
  const [first] = dataplanePids(vr.proc.pid!);
  await new Promise((r) => setTimeout(r, 1000));
  // The attack: the pages under the data plane's mapping of c's rings are gone.
  sys.ftruncate(c.ram.fd, 0);
  const restarted = await waitFor('a new data-plane process', () => /a new data-plane process \(pid (\d+)\) runs the PMDs, (\d+) ms after/.exec(vr.stderr()) ?? undefined, 10000);
  await a.waitForConsole(/VR-RESULT[^\n]*test=ping/, 30000);
  const during = vr.stderr();
  const ra = await a.done;
  b.kill();
  t.match(during, /the data-plane process died \(signal SIGBUS\)/, 'the data plane died of SIGBUS');
  t.not(Number(restarted[1]), first, 'a new data-plane process runs');
  t.match(during, /port c: its frontend shrank its guest memory under the data plane \(the file of the region at guest address 0x100000 shrank to 0 bytes; the memory table maps \d+\): the likely cause/, 'the culprit is named, with what it did');
  t.match(during, /port c: quarantined for 5 s: its frontend broke its guest memory/, 'and quarantined');
  t.match(during, /port c: connection closed: quarantined/, 'its frontend was disconnected');
  for (const port of ['a', 'b']) {
    t.notMatch(during, new RegExp(`port ${port}: (connection closed|quarantined)`), `port ${port}: never disconnected`);
    t.equal(during.match(new RegExp(`port ${port}: frontend connected`, 'g'))?.length, 1, `port ${port}: QEMU connected once`);
  }
  const [flood, after] = ra.results.filter((r) => r.test === 'ping');
  const lost = Number(flood?.sent) - Number(flood?.recv);
  t.ok(flood && lost >= 0 && lost <= 50, `a <-> b resumed within a second: ${lost} of ${flood?.sent} pings lost (1 s at 50/s is 50)`, { console: ra.console });
  t.equal(after?.loss_pct, '0', 'after: 0 % loss');
  t.ok(vr.alive(), 'vrouter kept running');
  t.comment(`data plane back ${restarted[2]} ms after the SIGBUS; ${lost} of ${flood?.sent} pings between the other guests lost`);
});

t.test('vrouterctl upgrade during a ping flood: a new data plane from the code on disk, no disconnect, the pause measured', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const [first] = dataplanePids(vr.proc.pid!);
  const { a, b } = await pingFlood(t, vr);
  await new Promise((r) => setTimeout(r, 2000));
  const before = await vr.stats();
  const upgraded = await vrouterctl(vr, 'upgrade');
  t.equal(upgraded.status, 0, `vrouterctl upgrade: ${upgraded.out.trim()}`);
  const answer = /data plane upgraded: pid (\d+) -> (\d+); forwarding paused ([\d.]+) ms/.exec(upgraded.out);
  t.ok(answer, 'it says which process took over and how long forwarding paused');
  t.equal(Number(answer?.[1]), first, 'from the data plane that ran');
  t.same(dataplanePids(vr.proc.pid!), [Number(answer?.[2])], 'to a new one, the data plane now');
  const pauseMs = Number(answer?.[3]);
  // Where the time went, so that a long pause says which link of the hand-over was slow.
  const steps = /old PMDs stopped at ([\d.]+) ms, the new told to go at ([\d.]+), every queue's commands sent at ([\d.]+)/.exec(upgraded.out)?.slice(1).map(Number) ?? [];
  t.ok(steps.length === 3 && steps.every((at, i) => at >= 0 && at >= (steps[i - 1] ?? 0) && at <= pauseMs), `its steps, in order, within the pause: ${steps.join(', ')} ms`);
  t.ok(pauseMs < 100, `forwarding paused ${pauseMs} ms (under 100 ms): ${upgraded.out.trim()}`);
  const info = (await adminClient(vr).call('GET', '/dataplane')).json as { pid: number; upgrades: number; deaths: number; lastUpgrade: { pid: number; pauseMs: number; pauseSteps: { oldStopped: number; go: number; queuesSent: number } } };
  t.same({ pid: info.pid, upgrades: info.upgrades, deaths: info.deaths }, { pid: Number(answer?.[2]), upgrades: 1, deaths: 0 }, 'GET /dataplane: the new pid, one upgrade, no death');
  t.match(info.lastUpgrade, { pid: Number(answer?.[2]), previousPid: first, pauseMs, pauseSteps: { oldStopped: steps[0], go: steps[1], queuesSent: steps[2] }, at: /^\d{4}-/ }, 'and the last upgrade, as vrouterctl printed it');
  const [spare] = await waitFor('a spare from the new code', () => (sparePids(vr.proc.pid!).length === 1 ? sparePids(vr.proc.pid!) : undefined), 10000);
  t.ok(spare !== first && spare !== Number(answer?.[2]), `a new spare runs (pid ${spare})`);
  await a.waitForConsole(/VR-RESULT[^\n]*test=ping/, 30000);
  const during = vr.stderr();
  const ra = await a.done;
  b.kill();
  for (const port of ['a', 'b']) {
    t.notMatch(during, new RegExp(`port ${port}: connection closed`), `port ${port}: no disconnect`);
    t.equal(during.match(new RegExp(`port ${port}: frontend connected`, 'g'))?.length, 1, `port ${port}: QEMU connected once`);
  }
  const [flood, after] = ra.results.filter((r) => r.test === 'ping');
  const lost = Number(flood?.sent) - Number(flood?.recv);
  t.ok(flood && lost >= 0 && lost <= 5, `${lost} of ${flood?.sent} flood pings lost (a pause under 100 ms loses at most a few at 50/s)`, { console: ra.console });
  t.equal(after?.loss_pct, '0', 'after: 0 % loss');
  const end = await vr.stats();
  t.ok(end.a.rx_packets > before.a.rx_packets, 'counters carried on');
  t.comment(`upgrade: forwarding paused ${pauseMs} ms (steps at ${steps.join(', ')} ms); ${lost} of ${flood?.sent} pings lost`);
});
