// Packets held while their next hop is resolved: sent on once it answers, in a batch of
// the port they came from; asked for again every RETRANS_MS while it does not, whether or
// not more packets come (RFC 4861 7.2.2, as Linux's timer does); once it failed, or they
// waited HOLD_MS, each is dropped with the ICMP error its sender is owed (host unreachable;
// ICMPv6 address unreachable, which RFC 4861 7.2.2 makes a MUST).
import { macHi, macLo, writeMac, type PacketBatch } from '../../src/pipeline/api.ts';
import { hostUnreachable } from './ipv4.ts';
import { addressUnreachable } from './ipv6.ts';
import { askFor, type NextHop } from './neighbour-io.ts';
import { FAILED, INCOMPLETE, MAX_PROBES, RETRANS_MS } from './neighbours.ts';
import { HOLD_MS, type Router } from './router.ts';

/** scratch for the next hop asked for again (no allocation per packet) */
const nh: NextHop = { iface: 0, family: 4, a0: 0, a1: 0, a2: 0, a3: 0 };

/**
 * Sends the held packets of the batch's port whose neighbour is resolved (into the batch:
 * emit), asks again for those still being resolved, drops those whose neighbour failed or
 * that waited too long. Once per batch while any are held. A packet goes on only in a
 * batch of the port it came from, as that port's traffic (not batch.local): the stages
 * after this one judge it as they judge the rest (the acl stage its rules and connection
 * tracking, by its ingress port).
 */
export function releaseHeld(r: Router, batch: PacketBatch): void {
  const nb = r.neighbours;
  const ingress = batch.ingress;
  let h = 0;
  while (h < r.heldCount) {
    if (r.heldIngress[h] !== ingress) {
      h++;
      continue;
    }
    const a = h * 4;
    const slot = nb.find(r.heldIface[h], r.heldFamily[h], r.heldAddr[a], r.heldAddr[a + 1], r.heldAddr[a + 2], r.heldAddr[a + 3]);
    const state = slot < 0 ? 0 : nb.foundState;
    // REACHABLE, STALE or STATIC, with a port (one without is a slot another PMD took meanwhile: see deliver)
    if (state >= 2 && state !== FAILED && nb.foundPort >= 0) {
      if (!sendOn(r, batch, h, nb.foundPort, nb.foundMacHi, nb.foundMacLo)) return; // the burst is full: next one
    } else if (r.discardingHeld) {
      if (!discard(r, batch, h)) return;
    } else {
      const resolving = slot >= 0 && state !== FAILED;
      const unanswered = resolving && state === INCOMPLETE && nb.foundProbes >= MAX_PROBES && r.now - nb.foundProbed > RETRANS_MS;
      if (resolving && !unanswered && r.now - r.heldSince[h] <= HOLD_MS) {
        if (state === INCOMPLETE && r.now - nb.foundProbed > RETRANS_MS) askAgain(r, batch, h, slot);
        h++;
        continue;
      }
      if (unanswered) nb.setState(slot, FAILED);
      if (!dropUnreachable(r, batch, h)) return; // the burst is full: next one
    }
    r.removeHeld(h);
  }
}

/**
 * vrouter stops, or its PMDs are to be replaced (Plugin.stopping, Plugin.leaving): the
 * packets held would go with this PMD's state, counted nowhere. Each goes on if its next
 * hop answers before its port's next batch; the others are dropped there, as
 * held_discarded, and no packet is held any more (neighbour-io.ts).
 */
export function discardHeld(r: Router): void {
  r.discardingHeld = true;
  r.wantHeldBatches();
}

/** Held packet h dropped as held_discarded, in the batch; false when the burst is full (its port's next batch is asked for). */
function discard(r: Router, batch: PacketBatch, h: number): boolean {
  const j = emitHeld(r, batch, h, batch.ingress);
  if (j < 0) {
    r.wantBatch(batch.ingress);
    return false;
  }
  batch.dropAs(j, r.drop.held_discarded);
  r.count(batch.ingress, r.counter.held_dropped, 1);
  return true;
}

/** Held packet h out of `port` to its next hop's MAC, emitted into the batch; false when the burst is full. */
function sendOn(r: Router, batch: PacketBatch, h: number, port: number, dstHi: number, dstLo: number): boolean {
  const j = emitHeld(r, batch, h, port);
  if (j < 0) return false;
  writeMac(batch.data, batch.offset(j), dstHi, dstLo);
  r.count(batch.ingress, r.counter.held_released, 1);
  r.count(batch.ingress, r.counter.routed, 1);
  return true;
}

/**
 * Held packet h, emitted into the batch, answered with its ICMP error back out of its port
 * (within the ICMP rate limit) and dropped as neighbour_unreachable; false when the burst
 * is full.
 */
function dropUnreachable(r: Router, batch: PacketBatch, h: number): boolean {
  const j = emitHeld(r, batch, h, batch.ingress);
  if (j < 0) return false;
  const at = r.byPort[batch.ingress];
  // From a port still routed (the error's source is the router's address there).
  if (at >= 0) {
    if (r.heldFamily[h] === 4) hostUnreachable(r, batch, j, r.interfaces[at]);
    else addressUnreachable(r, batch, j, r.interfaces[at]);
  }
  batch.dropAs(j, r.drop.neighbour_unreachable);
  r.count(batch.ingress, r.counter.held_dropped, 1);
  return true;
}

/** A copy of held packet h emitted into the batch towards `port`, its source MAC as it came kept (saveSource), then the router's; -1 when the burst is full. */
function emitHeld(r: Router, batch: PacketBatch, h: number, port: number): number {
  const j = batch.emit(port);
  if (j < 0) return -1;
  batch.local[j] = 0;
  const d = batch.data;
  const off = batch.offset(j);
  const len = r.heldLength[h];
  d.set(r.heldData.subarray(h * r.heldRoom, h * r.heldRoom + len), off);
  const routerHi = macHi(d, off + 6);
  const routerLo = macLo(d, off + 6);
  writeMac(d, off + 6, r.heldSourceHi[h], r.heldSourceLo[h]);
  batch.saveSource(j);
  writeMac(d, off + 6, routerHi, routerLo);
  batch.setLength(j, len);
  return j;
}

/** A request for held packet h's next hop (in `slot`), sent again: within the port's solicitation budget. */
function askAgain(r: Router, batch: PacketBatch, h: number, slot: number): void {
  nh.iface = r.heldIface[h];
  nh.family = r.heldFamily[h];
  nh.a0 = r.heldAddr[h * 4];
  nh.a1 = r.heldAddr[h * 4 + 1];
  nh.a2 = r.heldAddr[h * 4 + 2];
  nh.a3 = r.heldAddr[h * 4 + 3];
  askFor(r, batch, r.interfaces[nh.iface], nh, slot, false);
}
