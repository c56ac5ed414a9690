// Frames between a kernel interface and the packet buffers through an AF_PACKET socket's
// memory-mapped rings (TPACKET_V3): the kernel fills receive blocks of many frames and
// hands each over whole (block_status USER); the PMD copies the frames out and gives the
// block back. Frames to send are copied into transmit slots marked SEND_REQUEST, and one
// sendto() per burst tells the kernel. No system call per frame either way.
//
// Layouts (linux/if_packet.h), little-endian:
//   block:  4 version, 4 offset_to_priv, then tpacket_hdr_v1: 4 block_status, 4 num_pkts,
//           4 offset_to_first_pkt, 4 blk_len, 8 seq_num, ...
//   frame:  tpacket3_hdr: 4 tp_next_offset, 4 sec, 4 nsec, 4 tp_snaplen, 4 tp_len,
//           4 tp_status, 2 tp_mac, 2 tp_net, then tpacket_hdr_variant1: 4 tp_rxhash,
//           4 tp_vlan_tci, 2 tp_vlan_tpid, ... (48 bytes with padding); a transmit
//           frame's data follows the header at 48.
import { packetKick, packetRingDrops, type PacketRingShape } from '../sys/libc.ts';
import { nativeCopy } from './native-copy.ts';
import { countDrops, DROP, QUEUE_RX_BYTES, QUEUE_RX_PACKETS, QUEUE_TX_BYTES, QUEUE_TX_PACKETS, RX_BYTES, RX_PACKETS, TX_BYTES, TX_PACKETS } from './counters.ts';
import { DATA_ROOM, type PacketPool } from './packet-pool.ts';
import type { Uplink } from './port-runtime.ts';

const TP_STATUS_KERNEL = 0;
const TP_STATUS_USER = 1;
/** in a block's status: the kernel has dropped frames since its drop count was last read */
const TP_STATUS_LOSING = 1 << 2;
/** in a frame's status: the interface took its 802.1Q tag off (tp_vlan_tci), and its TPID (tp_vlan_tpid) */
const TP_STATUS_VLAN_VALID = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID = 1 << 6;
const ETHERTYPE_VLAN = 0x8100;
const VLAN_TAG_LEN = 4;
const TP_STATUS_AVAILABLE = 0;
const TP_STATUS_SEND_REQUEST = 1;
const TP_STATUS_WRONG_FORMAT = 4;
/** where a transmit frame's data starts: TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) */
export const TX_DATA_OFFSET = 48;
/** struct tpacket_block_desc: a block's first frame lies after it */
const BLOCK_DESC_BYTES = 48;
/** struct tpacket3_hdr: a frame's header, which lies whole in its block */
const FRAME_HDR_BYTES = 48;
const ETHER_HDR_LEN = 14;

/** An AF_PACKET port's rings as the PMD that polls it sees them. */
export class PacketRings implements Uplink {
  readonly fd: number;
  private readonly shape: PacketRingShape;
  private readonly bytes: Uint8Array;
  private readonly words: Int32Array;
  private readonly u16: Uint16Array;
  private readonly counters: Float64Array;
  private readonly counterBase: number;
  private readonly queueCounterBase: number;
  private readonly maxFrame: number;
  private readonly txBase: number;
  private readonly txPerBlock: number;
  private readonly txSlots: number;
  /** the receive block read next, and where in it (frames left, offset of the next) */
  private rxBlock = 0;
  private rxLeft = 0;
  private rxAt = 0;
  private txSlot = 0;
  /** frames handed to the kernel that it may not have taken yet (see flushTransmit()) */
  private txPending = false;

  constructor(fd: number, shape: PacketRingShape, ring: ArrayBuffer, counters: Float64Array, counterBase: number, queueCounterBase: number, maxFrame: number) {
    this.fd = fd;
    this.shape = shape;
    this.bytes = new Uint8Array(ring);
    this.words = new Int32Array(ring);
    this.u16 = new Uint16Array(ring);
    this.counters = counters;
    this.counterBase = counterBase;
    this.queueCounterBase = queueCounterBase;
    this.maxFrame = maxFrame < DATA_ROOM ? maxFrame : DATA_ROOM;
    this.txBase = shape.blockBytes * shape.rxBlocks;
    this.txPerBlock = Math.floor(shape.blockBytes / shape.txFrameBytes);
    this.txSlots = this.txPerBlock * shape.txBlocks;
    this.rxBlock = this.oldestUserBlock();
  }

  /**
   * A new owner of the rings (a data plane that took over) starts at the oldest block the
   * kernel handed over: the previous owner may have left blocks unread (or half read: those
   * frames are taken again).
   */
  private oldestUserBlock(): number {
    let oldest = 0;
    let oldestSeq = Infinity;
    for (let b = 0; b < this.shape.rxBlocks; b++) {
      const base = (b * this.shape.blockBytes) >> 2;
      if ((Atomics.load(this.words, base + 2) & TP_STATUS_USER) === 0) continue;
      const seq = (this.words[base + 6] >>> 0) + (this.words[base + 7] >>> 0) * 4294967296;
      if (seq < oldestSeq) {
        oldestSeq = seq;
        oldest = b;
      }
    }
    return oldest;
  }

  /** Copies up to `max` received frames into packet buffers from `start`; returns how many. */
  receive(pool: PacketPool, handles: Uint32Array, start: number, max: number): number {
    if (this.txPending) this.flushTransmit();
    const words = this.words;
    const blockBytes = this.shape.blockBytes;
    const counters = this.counters;
    const base = this.counterBase;
    let taken = 0;
    let bytes = 0;
    while (taken < max) {
      const block = this.rxBlock * blockBytes;
      if (this.rxLeft === 0) {
        const blockStatus = Atomics.load(words, (block >> 2) + 2);
        if ((blockStatus & TP_STATUS_USER) === 0) break;
        // Frames the kernel had no room for in the ring are lost before we see them, and
        // counted nowhere else (not in the interface's counters): count them here.
        if ((blockStatus & TP_STATUS_LOSING) !== 0) countDrops(counters, base, DROP.receive_ring_full, packetRingDrops(this.fd));
        this.rxLeft = words[(block >> 2) + 3];
        this.rxAt = block + words[(block >> 2) + 4];
        // Offsets are the kernel's, checked all the same: a frame is read within its block.
        if (this.rxLeft <= 0 || this.rxAt < block + BLOCK_DESC_BYTES || this.rxAt + FRAME_HDR_BYTES > block + blockBytes || (this.rxAt & 3) !== 0) {
          this.releaseBlock(block);
          continue;
        }
      }
      const at = this.rxAt;
      const snap = words[(at >> 2) + 3];
      const status = words[(at >> 2) + 5];
      const mac = this.u16[(at >> 1) + 12];
      const next = words[at >> 2];
      // The frame as it was on the wire: tp_len, of which tp_snaplen is all there is when a
      // frame is longer than a block holds (a GSO super-frame), and the VLAN tag the
      // interface may have taken off.
      const len = words[(at >> 2) + 4];
      const tagged = (status & TP_STATUS_VLAN_VALID) !== 0;
      const wire = snap + (tagged ? VLAN_TAG_LEN : 0);
      if (snap !== len || wire > this.maxFrame) {
        countDrops(counters, base, DROP.frame_too_long);
      } else if (snap < ETHER_HDR_LEN || at + mac + snap > block + blockBytes) {
        countDrops(counters, base, DROP.frame_too_short);
      } else {
        const handle = pool.alloc();
        if (handle < 0) {
          countDrops(counters, base, DROP.no_buffer);
        } else {
          if (tagged) this.copyTagged(pool, handle, at, status, snap);
          else nativeCopy.call(this.bytes, pool.data, pool.frameOffset(handle), at + mac, at + mac + snap);
          pool.length[handle] = wire;
          handles[start + taken++] = handle;
          bytes += wire;
        }
      }
      this.rxLeft--;
      if (this.rxLeft === 0 || next <= 0 || at + next + FRAME_HDR_BYTES > block + blockBytes || (next & 3) !== 0) this.releaseBlock(block);
      else this.rxAt = at + next;
    }
    counters[base + RX_PACKETS] += taken;
    counters[base + RX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_RX_PACKETS] += taken;
    counters[this.queueCounterBase + QUEUE_RX_BYTES] += bytes;
    return taken;
  }

  /**
   * Copies a frame whose 802.1Q tag the interface took off (rx VLAN offload: veth and most
   * NICs do by default) with the tag put back between the MAC addresses, as it was sent:
   * a tagged frame must not pass for an untagged one (a guest port and a TAP port see the tag).
   */
  private copyTagged(pool: PacketPool, handle: number, at: number, status: number, snap: number): void {
    const to = pool.frameOffset(handle);
    const from = at + this.u16[(at >> 1) + 12];
    nativeCopy.call(this.bytes, pool.data, to, from, from + 12);
    const tpid = (status & TP_STATUS_VLAN_TPID_VALID) !== 0 ? this.u16[(at >> 1) + 18] : ETHERTYPE_VLAN;
    const tci = this.words[(at >> 2) + 8];
    const d = pool.data;
    d[to + 12] = tpid >>> 8;
    d[to + 13] = tpid & 0xff;
    d[to + 14] = (tci >>> 8) & 0xff;
    d[to + 15] = tci & 0xff;
    nativeCopy.call(this.bytes, pool.data, to + 12 + VLAN_TAG_LEN, from + 12, from + snap);
  }

  private releaseBlock(block: number): void {
    Atomics.store(this.words, (block >> 2) + 2, TP_STATUS_KERNEL);
    this.rxLeft = 0;
    this.rxBlock = this.rxBlock + 1 === this.shape.rxBlocks ? 0 : this.rxBlock + 1;
  }

  /** Where transmit slot `slot`'s frame starts in the ring. */
  private txFrame(slot: number): number {
    return this.txBase + ((slot / this.txPerBlock) | 0) * this.shape.blockBytes + (slot % this.txPerBlock) * this.shape.txFrameBytes;
  }

  /**
   * Each poll round while frames were handed over: the kernel takes what its socket's send
   * buffer has room for and leaves the rest SEND_REQUEST (a full qdisc or NIC queue, a
   * burst of segments), and nothing tells it to go on but another sendto. So while the
   * last frame written is still waiting, the kernel is told again (until it refuses for
   * good, the interface down or gone: the next frames sent start again).
   */
  private flushTransmit(): void {
    const last = this.txSlot === 0 ? this.txSlots - 1 : this.txSlot - 1;
    this.txPending = Atomics.load(this.words, (this.txFrame(last) >> 2) + 5) === TP_STATUS_SEND_REQUEST && packetKick(this.fd);
  }

  /** Copies `count` frames into transmit slots and has the kernel send them; the buffers stay the caller's. */
  transmit(pool: PacketPool, handles: Uint32Array, count: number): void {
    const words = this.words;
    const counters = this.counters;
    const base = this.counterBase;
    const room = this.shape.txFrameBytes - TX_DATA_OFFSET;
    let sent = 0;
    let bytes = 0;
    const data = pool.data;
    const untaggedMax = this.maxFrame - VLAN_TAG_LEN;
    for (let i = 0; i < count; i++) {
      const slot = this.txSlot;
      const frame = this.txFrame(slot);
      const status = Atomics.load(words, (frame >> 2) + 5);
      const h = handles[i];
      const len = pool.length[h];
      // The kernel sends MTU + 14 bytes, 4 more for an 802.1Q tag (and for 802.1ad's none,
      // packet_extra_vlan_len_allowed()): a longer frame from a port whose limit it is
      // not (a guest's untagged frame of MTU + 18, say) is this port's too long.
      if (len > untaggedMax && (len > this.maxFrame || ((data[pool.frameOffset(h) + 12] << 8) | data[pool.frameOffset(h) + 13]) !== ETHERTYPE_VLAN)) {
        countDrops(counters, base, DROP.frame_too_long);
        continue;
      }
      if ((status !== TP_STATUS_AVAILABLE && status !== TP_STATUS_WRONG_FORMAT) || len > room) {
        countDrops(counters, base, DROP.interface_refused);
        continue;
      }
      // The kernel refused the frame this slot held last (PACKET_LOSS makes it skip such a
      // frame instead, libc.ts: kept for a kernel that would not): it was counted sent
      // then, and is counted refused now.
      if (status === TP_STATUS_WRONG_FORMAT) countDrops(counters, base, DROP.interface_refused);
      const source = pool.frameOffset(h);
      nativeCopy.call(pool.data, this.bytes, frame + TX_DATA_OFFSET, source, source + len);
      words[(frame >> 2) + 3] = len;
      words[(frame >> 2) + 4] = len;
      Atomics.store(words, (frame >> 2) + 5, TP_STATUS_SEND_REQUEST);
      this.txSlot = slot + 1 === this.txSlots ? 0 : slot + 1;
      sent++;
      bytes += len;
    }
    // A kick refused (the interface gone down) leaves the frames queued: slots stay taken,
    // and the frames after them are counted as refused until the interface takes them.
    if (sent > 0) this.txPending = packetKick(this.fd);
    counters[base + TX_PACKETS] += sent;
    counters[base + TX_BYTES] += bytes;
    counters[this.queueCounterBase + QUEUE_TX_PACKETS] += sent;
    counters[this.queueCounterBase + QUEUE_TX_BYTES] += bytes;
  }
}
