// Frames copied once leave their rest in the sender's memory until the burst is delivered.
// A frontend that unplugs that memory right after making the frames available, again and
// again, must not make the PMD read memory that is gone: each frame arrives whole or is
// dropped as a bad descriptor, nothing is left mapped, and the neighbours keep forwarding.
import t from 'tap';
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import { Req } from '../../src/vhost/protocol.ts';
import { memRegionPayload } from '../support/vhost-frontend.ts';
import { ethernetFrame, postRxBuffer } from '../support/virtio-driver.ts';
import { processResources, waitFor } from '../support/traffic.ts';
import { pluggingGuest, withNeighbours } from './lib.ts';

const MAC_H = '52:54:00:00:00:0e';
const ROUNDS = 10;
const PER_ROUND = 16;
/** the frame's first bytes in h's boot memory, the rest (a page of payload, as Linux sends TCP) in the plugged region */
const HEAD = 66;
const PAYLOAD = 1400;

t.test('memory unplugged under frames on their way out: each arrives whole or is dropped, nothing read after it is gone', async (t) => {
  const n = await withNeighbours(['h']);
  t.teardown(() => n.close());
  const { h, dimm } = await pluggingGuest(t, n);
  const withH = processResources(n.vr.proc.pid!);
  const receivers = [n.a, n.b].map((d) => {
    const at = new Map<number, number>();
    for (let i = 0; i < ROUNDS * PER_ROUND; i++) {
      const { head, off } = postRxBuffer(d.rx, 2048);
      at.set(head, off);
    }
    return { d, at, frames: [] as Uint8Array[] };
  });
  const sent: Uint8Array[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    t.equal(await h.frontend.request(Req.ADD_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, `round ${round}: plugged`);
    for (let k = 0; k < PER_ROUND; k++) {
      const frame = ethernetFrame('ff:ff:ff:ff:ff:ff', MAC_H, PAYLOAD, round * PER_ROUND + k);
      sent.push(frame);
      const headOff = h.ram.alloc(NET_HDR_LEN + HEAD);
      h.ram.bytes.fill(0, headOff, headOff + NET_HDR_LEN);
      h.ram.bytes.set(frame.subarray(0, HEAD), headOff + NET_HDR_LEN);
      const restGpa = dimm.alloc(frame.length - HEAD);
      dimm.bytes.set(frame.subarray(HEAD), restGpa - dimm.gpaBase);
      const chain = h.tx.addChain([
        { addr: h.ram.gpa(headOff), len: NET_HDR_LEN + HEAD },
        { addr: restGpa, len: frame.length - HEAD },
      ]);
      h.tx.makeAvailable(chain);
    }
    h.kick();
    // Unplugged at once, whether the PMD has taken the frames or not.
    t.equal(await h.frontend.request(Req.REM_MEM_REG, memRegionPayload(dimm.slot()), [dimm.fd]), 0n, `round ${round}: unplugged`);
  }
  // Every chain comes back, used or refused.
  await waitFor("h's chains all returned", () => h.tx.usedIdx() === ROUNDS * PER_ROUND || undefined, 5000);
  await new Promise((r) => setTimeout(r, 200));
  for (const r of receivers) {
    for (const used of r.d.rx.takeUsed()) {
      const off = r.at.get(used.id)!;
      r.frames.push(r.d.ram.bytes.slice(off + NET_HDR_LEN, off + used.len));
    }
  }
  const stats = await n.vr.stats();
  const refused = stats.h.drops.bad_descriptor;
  t.equal(stats.h.rx_packets + refused, ROUNDS * PER_ROUND, `every frame taken (${stats.h.rx_packets}) or refused as a bad descriptor (${refused})`);
  t.ok(stats.h.rx_packets > 0, 'some were taken while the memory was there');
  for (const [name, r] of [['a', receivers[0]], ['b', receivers[1]]] as const) {
    t.equal(r.frames.length, stats.h.rx_packets, `${name} got every frame taken`);
    const whole = r.frames.filter((f) => sent.some((s) => s.length === f.length && s.every((byte, i) => byte === f[i])));
    t.equal(whole.length, r.frames.length, `${name}: each one whole, byte for byte as sent`);
  }
  await new Promise((r) => setTimeout(r, 100));
  t.equal(processResources(n.vr.proc.pid!).guestMappings, withH.guestMappings, 'nothing of the plugged region left mapped');
  t.ok(n.vr.alive(), 'vrouter runs on');
  t.ok(await n.stillForward(), 'a and b forward');
});
