// The data-plane process killed (SIGKILL) during a guest's ping flood: the supervisor
// keeps the guests' connections, starts a new data-plane process and hands it the same
// fds, vring positions and shared state. QEMU sees no disconnect; the loss is bounded and
// reported, and the counters carry on from where they were.
import t from 'tap';
import { bootGuest, guestPrerequisites } from './lib/guest.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';
import { dataplanePids, waitFor } from '../support/traffic.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('the data-plane process killed during a ping flood', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const supervisor = vr.proc.pid!;
  const [first] = dataplanePids(supervisor);
  t.ok(first !== undefined, `the supervisor (pid ${supervisor}) runs a child named vrouter-dataplane (pid ${first})`);
  const b = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_wait_peer 10.0.0.2 60; sleep 45', timeoutS: 100 });
  t.teardown(() => b.kill());
  // a floods b with pings, 50 per second for 10 s, then pings 10 times more.
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    script: 'vr_wait_peer 10.0.0.3 60 && echo FLOOD-START && vr_ping 10.0.0.3 500 56 0.02; vr_ping 10.0.0.3 10',
    timeoutS: 100,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/FLOOD-START/, 60000);
  await new Promise((r) => setTimeout(r, 2000));
  const before = await vr.stats();
  process.kill(first, 'SIGKILL');
  const restarted = await waitFor('a new data-plane process', () => /a new data-plane process \(pid (\d+)\) runs the PMDs, (\d+) ms after/.exec(vr.stderr()) ?? undefined, 10000);
  // The log as it is when the flood ended, both guests still running.
  await a.waitForConsole(/VR-RESULT[^\n]*test=ping/, 30000);
  const during = vr.stderr();
  const [ra, rb] = await Promise.all([a.done, b.done]);
  const log = vr.stderr();
  t.match(log, /the data-plane process died \(signal SIGKILL\)/, 'the supervisor saw the data plane die, and how');
  const second = Number(restarted[1]);
  t.not(second, first, `a new data-plane process (pid ${second})`);
  t.same(dataplanePids(supervisor), [second], 'it is the only one, a child of the same supervisor');
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
  t.comment(`data plane back ${restarted[2]} ms after its death; ${lost} of ${flood?.sent} flood pings lost`);
});
