// A guest flooding the router's own address on a port with a Linux mirror: each packet
// for the mirror costs the PMD a system call, so the punt policer lets through what the
// interface's rate allows and drops the rest (punt_rate_limited). Every frame is
// accounted for, Linux sees exactly what was punted, another mirrored interface keeps its
// own allowance, and two routed ports keep routing.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { startDevice } from '../support/vhost-frontend.ts';
import { waitFor } from '../support/traffic.ts';
import { testGuest } from '../support/test-guest.ts';
import { startVrouter } from '../support/vrouter-process.ts';
import { tcp4, udp4 } from '../support/frames.ts';
import { GUEST, ROUTER, routedAtoB } from './lib.ts';
import { deleteNamespace } from '../support/netns.ts';

const PUNT_RATE = 1000;
const PUNT_BURST = 100;
const FLOOD = 30_000;

const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** Packets the mirror interface NAME in netns received from vrouter (the TAP's TX side is the namespace's RX). */
function mirrorReceived(netns: string, name: string): number {
  return JSON.parse(ip('-j', '-s', '-n', netns, 'link', 'show', 'dev', name))[0].stats64.rx.packets;
}

t.test('a flood to the router\'s address is policed before its Linux mirror', async (t) => {
  const netns = `vrpunt${process.pid}`;
  t.teardown(() => deleteNamespace(netns));
  const vr = await startVrouter({
    ports: [
      { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24'], routerMac: ROUTER.a, linuxMirror: { netns } },
      { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'], routerMac: ROUTER.b },
      { name: 'h', socket: '{dir}/h.sock', addresses: ['10.9.0.1/16'], routerMac: ROUTER.h, linuxMirror: { netns } },
    ],
    pmd: { cores: [1] },
    pipeline: ['routing'],
    plugins: { routing: { puntRate: PUNT_RATE, puntBurst: PUNT_BURST } },
  });
  t.teardown(() => vr.stop());
  const [a, b, h] = [await startDevice(vr.sockets.a), await startDevice(vr.sockets.b), await startDevice(vr.sockets.h)];
  t.teardown(() => [a, b, h].forEach((d) => d.close()));
  const [ga, gb, gh] = [testGuest(a), testGuest(b), testGuest(h)];

  const stillRouting = await routedAtoB(ga, gb);

  // Let the bucket fill, then flood: UDP to the router's address, which vrouter leaves to Linux.
  await new Promise((r) => setTimeout(r, 300));
  const before = (await vr.stats()).h.plugins.routing;
  const linuxBefore = mirrorReceived(netns, 'h');
  const flood = Array.from({ length: FLOOD }, (_, k) => udp4({ src: '10.9.0.2', dst: '10.9.0.1', srcPort: 1024 + (k & 0x7fff), dstPort: 5000, payload: 18, srcMac: GUEST.h, dstMac: ROUTER.h }));
  const started = performance.now();
  const flooding = gh.send(flood);
  // Meanwhile a's mirror has an allowance of its own, and a and b route.
  await new Promise((r) => setTimeout(r, 50));
  const aBefore = (await vr.stats()).a.plugins.routing.counters.punted_to_linux;
  await ga.send([tcp4({ src: '10.0.1.2', dst: '10.0.1.1', srcPort: 40000, dstPort: 179, flags: 'S', srcMac: GUEST.a, dstMac: ROUTER.a })]);
  t.ok(await stillRouting(64), 'a -> b routed during the flood');
  await flooding;
  const seconds = (performance.now() - started) / 1000;

  const counted = async () => {
    const s = await vr.stats();
    const r = s.h.plugins.routing;
    const punted = r.counters.punted_to_linux - before.counters.punted_to_linux;
    const limited = r.drops.punt_rate_limited - before.drops.punt_rate_limited;
    return punted + limited >= FLOOD ? { s, punted, limited } : undefined;
  };
  const { s, punted, limited } = await waitFor('every flood packet counted', counted, 5000);
  t.equal(punted + limited, FLOOD, `every packet accounted for: ${punted} punted, ${limited} dropped as punt_rate_limited, in ${seconds.toFixed(2)} s`);
  const allowed = PUNT_BURST + PUNT_RATE * (seconds + 0.5);
  t.ok(punted <= allowed, `punted ${punted}: within the burst and the rate (${allowed.toFixed(0)})`);
  t.ok(punted >= PUNT_BURST, `punted ${punted}: at least the burst went through`);
  t.equal(s.h.plugins.routing.drops.local_unhandled, 0, 'nothing fell back to local_unhandled');
  await waitFor('Linux received what was punted', () => mirrorReceived(netns, 'h') - linuxBefore >= punted || undefined, 5000);
  t.equal(mirrorReceived(netns, 'h') - linuxBefore, punted, 'the mirror received exactly the punted packets');
  t.equal(s.a.plugins.routing.counters.punted_to_linux - aBefore, 1, 'a\'s SYN for port 179 went to a\'s mirror during h\'s flood');
  t.equal(s.a.plugins.routing.drops.punt_rate_limited, 0, 'and nothing of a\'s was policed');
  t.equal(s.h.plugins.routing.drops.plugin_error, 0, 'the router never threw');

  // The allowance comes back: after a pause, h's next packet for Linux goes through.
  await new Promise((r) => setTimeout(r, 200));
  await gh.send([tcp4({ src: '10.9.0.2', dst: '10.9.0.1', srcPort: 40001, dstPort: 22, flags: 'S', srcMac: GUEST.h, dstMac: ROUTER.h })]);
  await waitFor('h\'s SYN punted after the pause', async () => ((await vr.stats()).h.plugins.routing.counters.punted_to_linux > s.h.plugins.routing.counters.punted_to_linux ? true : undefined), 5000);
  t.pass('h\'s packets reach Linux again once the rate allows');
  t.ok(await stillRouting(64), 'a -> b still routed after the flood');
  t.ok(vr.alive(), 'vrouter runs');
});
