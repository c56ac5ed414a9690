// A change at run time that gives a port a new router MAC or a new address: the PMDs that
// start on it announce the router's addresses there (gratuitous ARP, unsolicited neighbour
// advertisement), once the port's queues are back; the ports it leaves as they were hear
// nothing of it.
import t from 'tap';
import { adminClient } from '../support/admin-client.ts';
import { rxFrames } from '../support/host-prober.ts';
import type { ParsedFrame } from '../support/frames.ts';
import { waitFor } from '../support/traffic.ts';
import { startDevice } from '../support/vhost-frontend.ts';
import { startVrouter } from '../support/vrouter-process.ts';

const announcements = (frames: ParsedFrame[]) =>
  frames.flatMap((f) => (f.arp ? [`arp ${f.arp.senderMac} ${f.arp.senderIp}`] : f.ndp?.type === 136 ? [`na ${f.srcMac} ${f.ndp.target} O${Number(f.ndp.override)}`] : []));

t.test("a port's new router MAC and another's new address are announced there, once the PMDs run on them", async (t) => {
  const port = (name: string, n: number, extra: object = {}) => ({ name, socket: `{dir}/${name}.sock`, addresses: [`10.0.${n}.1/24`, `2001:db8:${n}::1/64`], routerMac: `02:00:00:00:0${n}:01`, ...extra });
  const vr = await startVrouter({ ports: [port('a', 1), port('b', 2), port('c', 3)], pipeline: ['routing'] });
  t.teardown(() => vr.stop());
  const api = adminClient(vr);
  const seen: Record<string, ParsedFrame[]> = { a: [], b: [], c: [] };
  const received: Record<string, () => ParsedFrame[]> = {};
  for (const name of Object.keys(seen)) {
    const d = await startDevice(vr.sockets[name]);
    t.teardown(() => d.close());
    received[name] = rxFrames(d);
  }
  const read = () => Object.keys(seen).forEach((name) => seen[name].push(...received[name]()));
  await new Promise((r) => setTimeout(r, 300));
  read();
  t.same(Object.keys(seen).map((name) => announcements(seen[name])), [[], [], []], 'none as vrouter starts');

  const config = (await api.call('GET', '/config')).json;
  const changed = config.ports.map((p: { name: string; addresses: string[] }) =>
    p.name === 'a' ? { ...p, routerMac: '02:00:00:00:0a:02' } : p.name === 'b' ? { ...p, addresses: [...p.addresses, '10.0.9.1/24'] } : p,
  );
  t.match(await api.call('PUT', '/config', { ...config, ports: changed }), { status: 200, json: { mode: 'restart' } }, "a's router MAC changed, an address added to b");
  await waitFor('the announcements', () => (read(), announcements(seen.a).length >= 2 && announcements(seen.b).length >= 3) || undefined, 5000);
  await new Promise((r) => setTimeout(r, 300));
  read();
  t.same(announcements(seen.a), ['arp 02:00:00:00:0a:02 10.0.1.1', 'na 02:00:00:00:0a:02 2001:db8:1::1 O1'], 'a: its addresses at its new MAC');
  t.same(announcements(seen.b), ['arp 02:00:00:00:02:01 10.0.2.1', 'arp 02:00:00:00:02:01 10.0.9.1', 'na 02:00:00:00:02:01 2001:db8:2::1 O1'], 'b: its addresses, the new one among them');
  t.same(announcements(seen.c), [], 'c, as it was: nothing');
});
