// 802.1Q VLAN ports: a port of type "vlan" has no queues of its own. Its parent's frames
// tagged with its VLAN ID arrive as its own, the tag taken off (TrunkSplit), and what the
// pipeline sends to it leaves through the parent with the tag put on (tagFrame), as Linux's
// eth0.10 on eth0. Untagged frames, and priority-tagged ones (VLAN ID 0, the tag taken
// off), stay the parent's. Otherwise a tagged frame crosses a parent only as a frame of one
// of its VLAN ports, untagged there (DROP.vlan_refused): a trunk carries the VLANs it has
// ports for, and no frame enters one of them past its VLAN port by a tag of its own, from
// the parent's segment or stacked inside a VLAN's (as a switch's access port refuses tagged
// frames). An 802.1ad tag, and a priority tag with another inside (which Linux takes for
// the inner tag's VLAN), count as tagged.
// Frames start at a fixed offset in their buffer: a tag is taken off or put on by moving
// the bytes after the two MACs, and the offload fields that count from the frame's start
// move with them.
import { BURST } from './guest-io.ts';
import { forgetOffloads } from './offloads.ts';
import { OFFLOAD_CSUM_START, OFFLOAD_FIELDS, OFFLOAD_GSO_SIZE, OFFLOAD_GSO_TYPE, OFFLOAD_HDR_LEN, type PacketPool } from './packet-pool.ts';
import { isSegmented } from './offloads.ts';
import { DROP } from './counters.ts';
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

/** vlanIdOf(): no tag */
export const UNTAGGED = -1;
/** vlanIdOf(): an 802.1ad tag, a priority tag with a tag inside, or a tag cut short */
export const FOREIGN_TAG = -2;
const TPID_8021AD = 0x88a8;

/**
 * The VLAN ID of the 802.1Q tag at byte `at` of frame `handle` (12: its outer tag, 16: one
 * inside it), 0 for a priority tag alone, UNTAGGED or FOREIGN_TAG.
 */
export function vlanIdOf(pool: PacketPool, handle: number, at = TAG_AT): number {
  const d = pool.data;
  const off = pool.frameOffset(handle) + at;
  const len = pool.length[handle] - at;
  if (len < 2) return UNTAGGED;
  const type = (d[off] << 8) | d[off + 1];
  if (type === TPID_8021AD) return FOREIGN_TAG;
  if (type !== TPID_8021Q) return UNTAGGED;
  if (len < VLAN_TAG_LEN + 2) return FOREIGN_TAG;
  const vid = ((d[off + 2] & 0x0f) << 8) | d[off + 3];
  if (vid !== 0) return vid;
  const inner = (d[off + 4] << 8) | d[off + 5];
  return inner === TPID_8021Q || inner === TPID_8021AD ? FOREIGN_TAG : 0;
}

/** Whether frame `handle` is of no VLAN: untagged, or a priority tag alone (a parent's own frame, or one for a VLAN port to tag). */
export function carriesNoVlan(pool: PacketPool, handle: number): boolean {
  const vid = vlanIdOf(pool, handle);
  return vid === UNTAGGED || vid === 0;
}

/** The VLAN port frame `handle` (of a parent with `vlanPorts`) is for, or PARENT_FRAME, REFUSED_FRAME, PRIORITY_FRAME. */
export function vlanPortOf(pool: PacketPool, handle: number, vlanPorts: Int8Array): number {
  const vid = vlanIdOf(pool, handle);
  if (vid === UNTAGGED) return PARENT_FRAME;
  if (vid === FOREIGN_TAG) return REFUSED_FRAME;
  return vid === 0 ? PRIORITY_FRAME : vlanPorts[vid];
}

/** The longest frame `handle` puts on the wire: a super-frame's segments', with their headers. */
export function longestFrame(pool: PacketPool, handle: number): number {
  if (!isSegmented(pool, handle)) return pool.length[handle];
  const fields = handle * OFFLOAD_FIELDS;
  return pool.offload[fields + OFFLOAD_HDR_LEN] + pool.offload[fields + OFFLOAD_GSO_SIZE];
}

/**
 * Why frame `handle`, a trunk's with a VLAN port's tag, may not be that port's (whose frames
 * are at most `maxFrame` bytes): a DROP code, or -1 if it may. Read before the tag comes
 * off: a capture of the parent shows the frame as it came.
 */
export function vlanFrameRefusal(pool: PacketPool, handle: number, maxFrame: number): number {
  if (longestFrame(pool, handle) - VLAN_TAG_LEN > maxFrame) return DROP.frame_too_long;
  const inner = vlanIdOf(pool, handle, TAG_AT + VLAN_TAG_LEN);
  return inner === UNTAGGED || inner === 0 ? -1 : DROP.vlan_refused;
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
