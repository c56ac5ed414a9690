// The XDP program that steers an interface's frames to its AF_XDP sockets (xdp.ts), loaded
// and attached through the bpf() system call: an XSKMAP of the sockets by queue, six eBPF
// instructions, and a BPF link that holds the program on the interface for as long as its fd
// is open (the supervisor's: the program goes with the port, or with vrouter however it ends).
import koffi from 'koffi';
import { closeAll, fail, interfaceIndex, libc } from './libc.ts';
import { EBUSY } from './linux-constants.ts';

const c = {
  bpf: libc.func('long syscall(long number, long cmd, const uint8_t *attr, unsigned int size)'),
};

const BPF_SYSCALL = 321; // x86-64
const BPF_MAP_CREATE = 0;
const BPF_MAP_UPDATE_ELEM = 2;
const BPF_PROG_LOAD = 5;
const BPF_LINK_CREATE = 28;
const BPF_MAP_TYPE_XSKMAP = 17;
const BPF_PROG_TYPE_XDP = 6;
const BPF_XDP = 37;
const BPF_PSEUDO_MAP_FD = 1;
const BPF_FUNC_REDIRECT_MAP = 51;
const XDP_PASS = 2;
const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;
const BPF_ATTR_BYTES = 128;

/** One eBPF instruction: opcode, dst and src registers, offset, immediate. */
function insn(out: DataView, i: number, code: number, dst: number, src: number, off: number, imm: number): void {
  out.setUint8(i * 8, code);
  out.setUint8(i * 8 + 1, dst | (src << 4));
  out.setInt16(i * 8 + 2, off, true);
  out.setInt32(i * 8 + 4, imm, true);
}

/**
 * The program, in six instructions: `return bpf_redirect_map(&xsks, ctx->rx_queue_index,
 * XDP_PASS)`: a frame goes to the socket of the queue it arrived on; a queue without one
 * passes its frames to Linux (the flags' low bits are the action when the key is absent).
 */
function redirectProgram(mapFd: number): Uint8Array {
  const code = new Uint8Array(6 * 8);
  const dv = new DataView(code.buffer);
  insn(dv, 0, 0x61, 2, 1, 16, 0); // r2 = *(u32 *)(r1 + 16): struct xdp_md.rx_queue_index
  insn(dv, 1, 0x18, 1, BPF_PSEUDO_MAP_FD, 0, mapFd); // r1 = the map (ld_imm64, two slots)
  insn(dv, 2, 0, 0, 0, 0, 0);
  insn(dv, 3, 0xb7, 3, 0, 0, XDP_PASS); // r3 = XDP_PASS
  insn(dv, 4, 0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP); // call bpf_redirect_map
  insn(dv, 5, 0x95, 0, 0, 0, 0); // exit
  return code;
}

function bpf(cmd: number, attr: Uint8Array, what: string): number {
  const r = Number(c.bpf(BPF_SYSCALL, cmd, attr, attr.length));
  if (r < 0) fail('bpf', what);
  return r;
}

/** The program steering an interface's frames to its AF_XDP sockets, attached: free it with closeAll([mapFd, linkFd]). */
export interface XdpSteering {
  mapFd: number;
  linkFd: number;
  /** native: in the driver; generic: on the socket buffers of Linux's receive path (any driver) */
  mode: 'native' | 'generic';
}

/**
 * Attaches the redirect program to interface `name` for `queues` queues, in the driver if
 * it has XDP (veth, most NICs), else in generic mode. The BPF link holds it there for as
 * long as its fd is open (closing it detaches the program; so does the interface going).
 */
export function xdpSteer(name: string, queues: number): XdpSteering {
  const ifindex = interfaceIndex(name);
  if (ifindex === 0) fail('if_nametoindex', name);
  const attr = new Uint8Array(BPF_ATTR_BYTES);
  const dv = new DataView(attr.buffer);
  dv.setUint32(0, BPF_MAP_TYPE_XSKMAP, true);
  dv.setUint32(4, 4, true); // key: the queue
  dv.setUint32(8, 4, true); // value: the socket's fd
  dv.setUint32(12, queues, true);
  attr.set(new TextEncoder().encode('vrouter_xsks'), 28);
  const mapFd = bpf(BPF_MAP_CREATE, attr, 'BPF_MAP_CREATE XSKMAP');
  let progFd = -1;
  try {
    const code = redirectProgram(mapFd);
    const license = new TextEncoder().encode('GPL\0');
    attr.fill(0);
    dv.setUint32(0, BPF_PROG_TYPE_XDP, true);
    dv.setUint32(4, code.length / 8, true);
    dv.setBigUint64(8, koffi.address(code) as bigint, true);
    dv.setBigUint64(16, koffi.address(license) as bigint, true);
    attr.set(new TextEncoder().encode('vrouter_xsk'), 48);
    dv.setUint32(68, BPF_XDP, true);
    progFd = bpf(BPF_PROG_LOAD, attr, 'BPF_PROG_LOAD XDP redirect to AF_XDP');
    const link = (flags: number): number => {
      attr.fill(0);
      dv.setUint32(0, progFd, true);
      dv.setUint32(4, ifindex, true);
      dv.setUint32(8, BPF_XDP, true);
      dv.setUint32(12, flags, true);
      return Number(c.bpf(BPF_SYSCALL, BPF_LINK_CREATE, attr, attr.length));
    };
    let mode: XdpSteering['mode'] = 'native';
    let linkFd = link(XDP_FLAGS_DRV_MODE);
    if (linkFd < 0 && koffi.errno() === EBUSY) fail('bpf', `BPF_LINK_CREATE on ${name}: another XDP program is attached to it`);
    if (linkFd < 0) {
      mode = 'generic';
      linkFd = link(XDP_FLAGS_SKB_MODE);
    }
    if (linkFd < 0) fail('bpf', `BPF_LINK_CREATE XDP on ${name}${koffi.errno() === EBUSY ? ': another XDP program is attached to it' : ''}`);
    return { mapFd, linkFd, mode };
  } catch (err) {
    closeAll([mapFd]);
    throw err;
  } finally {
    closeAll([progFd]);
  }
}

/** Steers queue `queue`'s frames to the socket `fd` (bound to that queue). */
export function xdpSteerQueue(steering: XdpSteering, queue: number, fd: number): void {
  const key = new Uint32Array([queue]);
  const value = new Uint32Array([fd]);
  const attr = new Uint8Array(BPF_ATTR_BYTES);
  const dv = new DataView(attr.buffer);
  dv.setUint32(0, steering.mapFd, true);
  dv.setBigUint64(8, koffi.address(key) as bigint, true);
  dv.setBigUint64(16, koffi.address(value) as bigint, true);
  bpf(BPF_MAP_UPDATE_ELEM, attr, `XSKMAP queue ${queue}`);
}
