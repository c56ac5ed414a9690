// Frontends come and go while vrouter runs: a guest's QEMU killed and started again on the
// same socket; a guest that resets its device (driver rebound, reboot) inside one QEMU;
// vrouter killed (SIGKILL) and started again, QEMU reconnecting by itself (reconnect=1);
// and ports in client mode, where QEMU listens and vrouter itself restarts.
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootGuest, guestPrerequisites, qmp } from './lib/guest.ts';
import { bridgeConfig, startVrouter } from '../support/vrouter-process.ts';

const missing = guestPrerequisites();
if (missing) t.fail(`cannot run QEMU guests: ${missing}`);

t.test('a guest restarted mid-test: traffic resumes without restarting vrouter', async (t) => {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const pid = vr.proc.pid;
  const b1 = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'sleep 100', timeoutS: 110 });
  t.teardown(() => b1.kill());
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24' }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 5 && echo PHASE1-DONE && sleep 3 && vr_wait_peer 10.0.0.3 90 && vr_ping 10.0.0.3 10',
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/PHASE1-DONE/, 90000);
  b1.kill();
  await b1.done;
  const b2 = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24' }], script: 'vr_wait_peer 10.0.0.2 60 && sleep 20', timeoutS: 60 });
  t.teardown(() => b2.kill());
  const ra = await a.done;
  const pings = ra.results.filter((r) => r.test === 'ping');
  t.equal(pings.length, 2, 'a pinged before and after the restart', { console: ra.console });
  t.equal(pings[0]?.loss_pct, '0', 'before: 0 % loss');
  t.equal(pings[1]?.loss_pct, '0', `after b came back: 0 % loss (${pings[1]?.recv}/${pings[1]?.sent})`);
  t.ok(vr.alive(), 'vrouter kept running');
  t.equal(vr.proc.pid, pid, 'the same vrouter process');
  t.match(vr.stderr(), /port b: connection closed: frontend disconnected/, 'the disconnect was seen and logged');
  const stats = await vr.stats();
  t.equal(stats.b.queue_errors, 0);
});

/** Inside one QEMU, on `props` (virtio-net-pci properties): a ping, the guest's driver rebound, a ping, a reboot, a ping. */
async function resetInsideQemu(t: Test, props: string[]): Promise<void> {
  const vr = await startVrouter(bridgeConfig());
  t.teardown(() => vr.stop());
  const b = bootGuest({ name: 'b', nics: [{ socket: vr.sockets.b, ip: '10.0.0.3/24', props }], script: 'sleep 150', timeoutS: 160 });
  t.teardown(() => b.kill());
  const qmpSocket = join(vr.dir, 'qmp-a.sock');
  // Each boot runs the script: a ping, the driver's rebind (unbind, bind: the device reset
  // and set up again over the same connection), a ping. The reboot comes after the first.
  const a = bootGuest({
    name: 'a',
    qmpSocket,
    reboots: true,
    nics: [{ socket: vr.sockets.a, ip: '10.0.0.2/24', props }],
    script: [
      'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 5',
      'dev=$(basename $(readlink /sys/class/net/eth0/device))',
      'echo $dev > /sys/bus/virtio/drivers/virtio_net/unbind && sleep 1 && echo $dev > /sys/bus/virtio/drivers/virtio_net/bind',
      'for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done',
      'ip addr add 10.0.0.2/24 dev eth0; ip link set eth0 up',
      'vr_wait_peer 10.0.0.3 30 && vr_ping 10.0.0.3 5 && echo VR-REBOUND',
      'sleep 30',
    ].join('\n'),
    timeoutS: 160,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/VR-REBOUND/, 120000);
  await qmp(qmpSocket, [{ execute: 'system_reset' }]);
  // The second boot's ping, after its VR-READY: its whole result line, not the start of it.
  await a.waitForConsole(/VR-READY[^]*VR-READY[^]*test=ping[^\n]*\n/, 120000);
  const during = vr.stderr();
  a.kill();
  const ra = await a.done;
  // The second boot may have pinged again (after its own rebind) before it was stopped.
  const pings = ra.results.filter((r) => r.test === 'ping').slice(0, 3);
  t.same(pings.map((p) => p.loss_pct), ['0', '0', '0'], 'before the rebind, after it and after the reboot: 0 % loss', { console: ra.console });
  t.equal((during.match(/port a: frontend connected/g) ?? []).length, 1, 'QEMU stayed connected throughout');
  t.notMatch(during, /port a: connection closed/, 'no disconnect');
  t.ok((during.match(/port a: vring 1 \(guest tx\) running/g) ?? []).length >= 3, 'a\'s TX ring set up at boot, after the rebind and after the reboot');
  const stats = await vr.stats();
  t.equal(stats.a.queue_errors + stats.b.queue_errors, 0, 'no queue errors');
}

t.test('inside one QEMU: the guest rebinds its virtio-net driver (a device reset), then reboots (system_reset); it pings after each', (t) => resetInsideQemu(t, []));

t.test('the same on packed rings', (t) => resetInsideQemu(t, ['packed=on']));

/** vrouter killed and started again while guests on `props` (virtio-net-pci properties) with reconnect=1 ping. */
async function killedAndStartedAgain(t: Test, props: string[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-killed-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sockets = { a: join(dir, 'a.sock'), b: join(dir, 'b.sock') };
  const config = { ports: [{ name: 'a', socket: sockets.a, bridge: 'br0' }, { name: 'b', socket: sockets.b, bridge: 'br0' }] };
  const first = await startVrouter(config);
  t.teardown(() => first.stop()); // after the kill: removes its directory
  const b = bootGuest({ name: 'b', nics: [{ socket: sockets.b, ip: '10.0.0.3/24', reconnect: 1, props }], script: 'sleep 110', timeoutS: 120 });
  t.teardown(() => b.kill());
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: sockets.a, ip: '10.0.0.2/24', reconnect: 1, props }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 5 && echo PHASE1-DONE && sleep 2 && vr_wait_peer 10.0.0.3 90 && echo PHASE2-REACHED && vr_ping 10.0.0.3 10',
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  await a.waitForConsole(/PHASE1-DONE/, 90000);
  first.proc.kill('SIGKILL');
  await new Promise((resolve) => first.proc.once('exit', resolve));
  const killedAt = Date.now();
  // The socket files of the killed process are still there: the new one replaces them.
  const second = await startVrouter(config);
  t.teardown(() => second.stop());
  await a.waitForConsole(/PHASE2-REACHED/, 90000);
  const backMs = Date.now() - killedAt;
  const ra = await a.done;
  const pings = ra.results.filter((r) => r.test === 'ping');
  t.equal(pings[0]?.loss_pct, '0', 'through the first vrouter: 0 % loss', { console: ra.console });
  t.equal(pings[1]?.loss_pct, '0', 'through the second, after QEMU reconnected: 0 % loss', { console: ra.console });
  t.match(second.stderr(), /port a: frontend connected/, 'QEMU reconnected to port a by itself');
  t.match(second.stderr(), /port b: frontend connected/, 'and to port b');
  t.comment(`guests pinging again ${backMs} ms after vrouter was killed (a new vrouter started at once)`);
  return second.stderr();
}

t.test('server mode with QEMU reconnect=1: vrouter killed and started again, the guests come back by themselves', async (t) => {
  await killedAndStartedAgain(t, []);
});

t.test('the same with packed rings: the new vrouter resumes them where the last left them', async (t) => {
  // QEMU gives a packed ring's base as a new ring's after the reconnect (it cannot read the
  // position back): vrouter finds where the ring is in the device's event suppression area.
  const log = await killedAndStartedAgain(t, ['packed=on']);
  t.match(log, /port a: vring 1: the frontend gave a fresh ring's base, the ring had moved on: resumed where the last device left it/, 'a\'s TX ring resumed where it was');
});

t.test('client mode: QEMU listens, vrouter connects, and reconnects after its own restart', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-client-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sockets = { a: join(dir, 'a.sock'), b: join(dir, 'b.sock') };
  const b = bootGuest({ name: 'b', nics: [{ socket: sockets.b, ip: '10.0.0.3/24', server: true }], script: 'sleep 100', timeoutS: 110 });
  t.teardown(() => b.kill());
  const a = bootGuest({
    name: 'a',
    nics: [{ socket: sockets.a, ip: '10.0.0.2/24', server: true }],
    script: 'vr_wait_peer 10.0.0.3 60 && vr_ping 10.0.0.3 5 && echo PHASE1-DONE && sleep 3 && vr_wait_peer 10.0.0.3 90 && vr_ping 10.0.0.3 10',
    timeoutS: 150,
  });
  t.teardown(() => a.kill());
  const config = {
    ports: [
      { name: 'a', socket: sockets.a, bridge: 'br0', mode: 'client' },
      { name: 'b', socket: sockets.b, bridge: 'br0', mode: 'client' },
    ],
  };
  const first = await startVrouter(config);
  t.teardown(() => first.stop());
  await a.waitForConsole(/PHASE1-DONE/, 90000);
  t.equal(await first.stop(), 0, 'the first vrouter stops cleanly');
  const second = await startVrouter(config);
  t.teardown(() => second.stop());
  const ra = await a.done;
  const pings = ra.results.filter((r) => r.test === 'ping');
  t.equal(pings[0]?.loss_pct, '0', 'through the first vrouter: 0 % loss', { console: ra.console });
  t.equal(pings[1]?.loss_pct, '0', 'through the second, after reconnecting: 0 % loss');
  t.match(second.stderr(), /port a: connected to .*a\.sock/);
  t.match(second.stderr(), /vring 1 \(guest tx\) running, size 256, base [1-9]/, 'rings resumed where QEMU left them, not at 0');
});
