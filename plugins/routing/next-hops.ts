// The next-hop groups the route tables point to, in one shared buffer every PMD reads,
// and the control plane's writer of it: groups are shared by all the routes with the same
// members (10,000 routes via one gateway are one group), counted, and written in place.
//
// A group is what a lookup returns (1-based; 0 is no route): LOCAL (an address of the
// router), a connected subnet (the next hop is the destination itself), a blackhole, or
// one or more gateways (ECMP: the members of the lowest metric for the prefix).
import { read32, sharedBuffer, type Prefix } from '../../src/pipeline/api.ts';
import { TableSpace } from './table-space.ts';

export const NO_ROUTE = 0;
/** the group of the router's own addresses */
export const LOCAL_GROUP = 1;
export const KIND_CONNECTED = 0;
export const KIND_GATEWAY = 1;
export const KIND_BLACKHOLE = 2;
export const KIND_LOCAL = 3;

/** A member: kind, interface, gateway address (4 words, IPv4 in the first), spare. */
export const MEMBER_WORDS = 8;

/**
 * The groups as one Int32Array: [group capacity, member capacity, (start, count) per group,
 * members]. A group's words are written before any route points to it, and not changed
 * while one does.
 */
export interface NextHops {
  words: Int32Array;
  groupBase: number;
  memberBase: number;
}

export function nextHopsView(buffer: ArrayBufferLike): NextHops {
  const words = new Int32Array(buffer);
  return { words, groupBase: 2, memberBase: 2 + words[0] * 2 };
}

/**
 * Whether group `group` (a lookup's result) has a member that leaves by interface `iface`
 * (any interface: -1), without a gateway if `connectedOnly` (the address is then on that
 * link). No route, the router's own addresses and blackholes leave by none.
 */
export function groupLeavesBy(hops: NextHops, group: number, iface: number, connectedOnly: boolean): boolean {
  if (group === NO_ROUTE || group === LOCAL_GROUP) return false;
  const w = hops.words;
  const start = w[hops.groupBase + group * 2];
  const members = w[hops.groupBase + group * 2 + 1];
  for (let k = 0; k < members; k++) {
    const m = hops.memberBase + (start + k) * MEMBER_WORDS;
    const kind = w[m];
    if (kind === KIND_BLACKHOLE || (connectedOnly && kind !== KIND_CONNECTED)) continue;
    if (iface < 0 || w[m + 1] === iface) return true;
  }
  return false;
}

export interface Member {
  kind: number;
  iface: number;
  gateway: Prefix | null;
}

/** The signature of the LOCAL group (resolveRoutes names groups by their members). */
export const LOCAL_SIGNATURE = 'local';

/** Groups by signature, counted by the routes that point to them, written into `buffer`. */
export class NextHopTable {
  readonly buffer: ArrayBufferLike;
  private readonly words: Int32Array;
  private readonly memberBase: number;
  private readonly ids: TableSpace;
  private readonly members: TableSpace;
  private readonly bySignature = new Map<string, number>();
  /** by group: its signature and the routes that point to it */
  private readonly signatures: string[] = [];
  private readonly refs: number[] = [];

  constructor(groupCapacity: number, memberCapacity: number, now?: () => number) {
    this.buffer = sharedBuffer((2 + groupCapacity * 2 + memberCapacity * MEMBER_WORDS) * 4);
    this.words = new Int32Array(this.buffer);
    this.words[0] = groupCapacity;
    this.words[1] = memberCapacity;
    this.memberBase = 2 + groupCapacity * 2;
    this.ids = new TableSpace(LOCAL_GROUP, groupCapacity, now);
    this.members = new TableSpace(0, memberCapacity, now);
    this.ids.alloc(1);
    this.write(LOCAL_GROUP, [{ kind: KIND_LOCAL, iface: -1, gateway: null }]);
    this.bySignature.set(LOCAL_SIGNATURE, LOCAL_GROUP);
    this.signatures[LOCAL_GROUP] = LOCAL_SIGNATURE;
    this.refs[LOCAL_GROUP] = Infinity;
  }

  /** The group with these members, written if new, counted `routes` more times; -1 when there is no room. */
  acquire(signature: string, members: readonly Member[], routes = 1): number {
    let id = this.bySignature.get(signature);
    if (id === undefined) {
      id = this.ids.alloc(1);
      if (id < 0) return -1;
      if (!this.write(id, members)) {
        this.ids.release(id, 1);
        return -1;
      }
      this.bySignature.set(signature, id);
      this.signatures[id] = signature;
      this.refs[id] = 0;
    }
    this.refs[id] += routes;
    return id;
  }

  /** One route fewer points to the group; the last one frees it (reused after the grace period). */
  release(id: number): void {
    if (--this.refs[id] > 0) return;
    this.bySignature.delete(this.signatures[id]);
    this.members.release(this.words[2 + id * 2], this.words[3 + id * 2]);
    this.ids.release(id, 1);
  }

  signatureOf(id: number): string {
    return this.signatures[id];
  }

  private write(id: number, members: readonly Member[]): boolean {
    const start = this.members.alloc(members.length);
    if (start < 0) return false;
    const w = this.words;
    members.forEach((member, k) => {
      const at = this.memberBase + (start + k) * MEMBER_WORDS;
      w.fill(0, at, at + MEMBER_WORDS);
      w[at] = member.kind;
      w[at + 1] = member.iface;
      if (member.gateway !== null) {
        const b = member.gateway.bytes;
        for (let q = 0; q < b.length / 4; q++) w[at + 2 + q] = read32(b, q * 4);
      }
    });
    w[2 + id * 2] = start;
    // Atomics.store: the members and start are in memory before the routes that are
    // written next can lead a lookup here.
    Atomics.store(w, 3 + id * 2, members.length);
    return true;
  }
}
