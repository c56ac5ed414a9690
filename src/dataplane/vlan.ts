// 802.1Q VLAN ports: a port of type "vlan" has no queues of its own. Its parent's frames
// tagged with its VLAN ID arrive as its own, the tag taken off (TrunkSplit), and what the
// pipeline sends to it leaves through the parent with the tag put on (tagFrame), as Linux's
// eth0.10 on eth0. Untagged frames, and priority-tagged ones (VLAN ID 0, the tag taken
// off), stay the parent's. Tagged frames of other VLANs do not cross a parent at all, either
// way (DROP.vlan_refused): a trunk carries the VLANs it has ports for, and a frame of the
// parent's own segment cannot enter one of them past its VLAN port, by a tag of its own
// (as a switch's access port refuses tagged frames).
// Frames start at a fixed offset in their buffer: a tag is taken off or put on by moving
// the bytes after the two MACs, and the offload fields that count from the frame's start
// move with them.
import { BURST } from './guest-io.ts';
import { forgetOffloads } from './offloads.ts';
import { OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, type PacketPool } from './packet-pool.ts';
import type { PortRuntime } from './port-runtime.ts';

export const TPID_8021Q = 0x8100;
/** the tag's bytes: TPID and TCI */
export const VLAN_TAG_LEN = 4;
/** where the tag starts: after the destination and source MACs */
const TAG_AT = 12;
const VLAN_IDS = 4096;

/** PortRuntime.vlanRole */
export const VLAN_NONE = 0;
export const VLAN_PORT = 1;
export const VLAN_PARENT = 2;

/** What vlanPortOf() says of a parent's frame besides a VLAN port: its own, untagged */
export const PARENT_FRAME = -1;
/** tagged with a VLAN no port has: dropped (vlan_refused) */
export const REFUSED_FRAME = -2;
/** priority-tagged (VLAN ID 0): the parent's, its tag taken off */
export const PRIORITY_FRAME = -3;

/** Gives each parent the table of its VLAN ports (PortRuntime.vlanPorts), and each port its role. */
export function linkVlanPorts(ports: readonly PortRuntime[]): void {
  for (const p of ports) {
    if (p.cfg.parent < 0 || p.cfg.parent >= ports.length) continue;
    const parent = ports[p.cfg.parent];
    parent.vlanPorts ??= new Int8Array(VLAN_IDS).fill(REFUSED_FRAME);
    parent.vlanPorts[p.cfg.vlan & (VLAN_IDS - 1)] = p.cfg.index;
    parent.vlanRole = VLAN_PARENT;
    p.vlanRole = VLAN_PORT;
  }
}

/** The VLAN ID of frame `handle`'s 802.1Q tag (0: a priority tag), or -1 if it has none. */
export function vlanIdOf(pool: PacketPool, handle: number): number {
  const d = pool.data;
  const off = pool.frameOffset(handle);
  if (pool.length[handle] < TAG_AT + VLAN_TAG_LEN + 2 || d[off + TAG_AT] !== 0x81 || d[off + TAG_AT + 1] !== 0x00) return -1;
  return ((d[off + TAG_AT + 2] & 0x0f) << 8) | d[off + TAG_AT + 3];
}

/** The VLAN port frame `handle` (of a parent with `vlanPorts`) is for, or PARENT_FRAME, REFUSED_FRAME, PRIORITY_FRAME. */
export function vlanPortOf(pool: PacketPool, handle: number, vlanPorts: Int8Array): number {
  const vid = vlanIdOf(pool, handle);
  if (vid < 0) return PARENT_FRAME;
  return vid === 0 ? PRIORITY_FRAME : vlanPorts[vid];
}

/** Takes the tag off frame `handle` (whole in its buffer: see DeferredPayloads.materialize). */
export function untagFrame(pool: PacketPool, handle: number): void {
  const off = pool.frameOffset(handle);
  const len = pool.length[handle];
  pool.data.copyWithin(off + TAG_AT, off + TAG_AT + VLAN_TAG_LEN, off + len);
  pool.length[handle] = len - VLAN_TAG_LEN;
  const fields = handle * OFFLOAD_FIELDS;
  const offload = pool.offload;
  if (offload[fields + OFFLOAD_CSUM_START] === 0) return;
  // A checksum said to start inside the headers moved is none a sender could mean.
  if (offload[fields + OFFLOAD_CSUM_START] - 1 < TAG_AT + VLAN_TAG_LEN) return forgetOffloads(pool, handle);
  offload[fields + OFFLOAD_CSUM_START] -= VLAN_TAG_LEN;
  if (offload[fields + OFFLOAD_GSO_TYPE] !== 0) offload[fields + OFFLOAD_HDR_LEN] -= VLAN_TAG_LEN;
}

/**
 * Puts a tag of VLAN `vlan` on frame `handle` (whole in its buffer). Returns false, the
 * frame unchanged, if its buffer has no room for 4 bytes more.
 */
export function tagFrame(pool: PacketPool, handle: number, vlan: number): boolean {
  const len = pool.length[handle];
  if (len + VLAN_TAG_LEN > pool.room(handle) || len < TAG_AT) return false;
  const off = pool.frameOffset(handle);
  const d = pool.data;
  d.copyWithin(off + TAG_AT + VLAN_TAG_LEN, off + TAG_AT, off + len);
  d[off + TAG_AT] = TPID_8021Q >> 8;
  d[off + TAG_AT + 1] = TPID_8021Q & 0xff;
  d[off + TAG_AT + 2] = (vlan >> 8) & 0x0f;
  d[off + TAG_AT + 3] = vlan & 0xff;
  pool.length[handle] = len + VLAN_TAG_LEN;
  const fields = handle * OFFLOAD_FIELDS;
  const offload = pool.offload;
  if (offload[fields + OFFLOAD_CSUM_START] === 0) return true;
  offload[fields + OFFLOAD_CSUM_START] += VLAN_TAG_LEN;
  if (offload[fields + OFFLOAD_GSO_TYPE] !== 0) offload[fields + OFFLOAD_HDR_LEN] += VLAN_TAG_LEN;
  return true;
}

/** TrunkSplit's mark of a frame already handed out */
const HANDED_OUT = -4;

/**
 * A burst from a parent, split by the port each frame is for: the parent's own frames
 * first, then each VLAN's, in the order they came, each group in `handles` from 0 for one
 * run of the pipeline. No allocation: the burst's handles and ports are kept aside here.
 */
export class TrunkSplit {
  private readonly kept = new Uint32Array(BURST);
  /** per frame of the burst: the VLAN port it is for, or one of the *_FRAME codes, or HANDED_OUT */
  private readonly owner = new Int8Array(BURST);
  private count = 0;
  private next = 0;

  /** Sorts the n frames in `handles`; returns how many of them are tagged (0: the burst is the parent's as it is). */
  begin(pool: PacketPool, handles: Uint32Array, n: number, vlanPorts: Int8Array): number {
    let tagged = 0;
    for (let i = 0; i < n; i++) {
      const h = handles[i];
      this.kept[i] = h;
      const port = vlanPortOf(pool, h, vlanPorts);
      this.owner[i] = port;
      if (port !== PARENT_FRAME) tagged++;
    }
    this.count = n;
    this.next = 0;
    return tagged;
  }

  /** The parent's frames into `handles` from 0, priority tags taken off; returns how many. */
  parentFrames(pool: PacketPool, handles: Uint32Array): number {
    let k = 0;
    for (let i = 0; i < this.count; i++) {
      const owner = this.owner[i];
      if (owner === PRIORITY_FRAME) untagFrame(pool, this.kept[i]);
      if (owner === PARENT_FRAME || owner === PRIORITY_FRAME) handles[k++] = this.kept[i];
    }
    return k;
  }

  /** The frames of VLANs no port has into `handles` from 0 (to be dropped); returns how many. */
  refusedFrames(handles: Uint32Array): number {
    let k = 0;
    for (let i = 0; i < this.count; i++) if (this.owner[i] === REFUSED_FRAME) handles[k++] = this.kept[i];
    return k;
  }

  /**
   * The next VLAN port with frames in the burst, its frames into `handles` from 0 (`out[0]`
   * their count), or -1 when none is left.
   */
  nextVlan(handles: Uint32Array, out: Int32Array): number {
    while (this.next < this.count && this.owner[this.next] < 0) this.next++;
    if (this.next === this.count) return -1;
    const port = this.owner[this.next];
    let k = 0;
    for (let i = this.next; i < this.count; i++) {
      if (this.owner[i] !== port) continue;
      handles[k++] = this.kept[i];
      this.owner[i] = HANDED_OUT;
    }
    out[0] = k;
    return port;
  }
}
