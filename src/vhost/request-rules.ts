// What each vhost-user request must come with before its handler runs: the fds it carries,
// the protocol feature it needs negotiated, whether it needs split rings. One table, read
// by the connection for every message (as rust-vmm's is_valid() per message); a payload's
// size and fields are checked by its reader in protocol.ts, which knows its struct.
import type { Message } from './message-reader.ts';
import { ProtocolFeature, Req, VRING_NOFD_MASK } from './protocol.ts';

/** RequestRule.feature: no protocol feature needed */
export const NO_FEATURE = -1;
/** RequestRule.feature: VHOST_USER_F_PROTOCOL_FEATURES negotiated, or protocol features set */
export const PROTOCOL_FEATURES = -2;

export interface RequestRule {
  /** whether vrouter serves it; one it never offered is refused, its fds taken and closed */
  served: boolean;
  /** the fds it carries: a count, or one read from its payload */
  fds: number | ((m: Message) => number);
  /** the protocol feature it needs (a ProtocolFeature), PROTOCOL_FEATURES or NO_FEATURE */
  feature: number;
  /** inflight tracking: kept in the split rings' layout only */
  splitRings: boolean;
}

const rule = (fds: RequestRule['fds'], feature = NO_FEATURE, splitRings = false): RequestRule => ({ served: true, fds, feature, splitRings });

/** A vring fd request: one fd unless the NOFD bit is set in its payload. */
const vringFd = (m: Message): number =>
  m.payload.length === 8 && (new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true) & VRING_NOFD_MASK) === 0 ? 1 : 0;

/** A request not in the table: never offered, and without fds. */
export const UNKNOWN_REQUEST: RequestRule = { served: false, fds: 0, feature: NO_FEATURE, splitRings: false };

export const REQUEST_RULES: ReadonlyMap<number, RequestRule> = new Map([
  [Req.GET_FEATURES, rule(0)],
  [Req.SET_FEATURES, rule(0)],
  [Req.GET_PROTOCOL_FEATURES, rule(0)],
  [Req.SET_PROTOCOL_FEATURES, rule(0)],
  [Req.GET_QUEUE_NUM, rule(0)],
  [Req.SET_OWNER, rule(0)],
  [Req.RESET_OWNER, rule(0)],
  [Req.RESET_DEVICE, rule(0)],
  // One fd a region: the count is the payload's first word (its reader checks the rest).
  [Req.SET_MEM_TABLE, rule((m) => (m.payload.length >= 4 ? new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true) : 0))],
  [Req.GET_MAX_MEM_SLOTS, rule(0, ProtocolFeature.CONFIGURE_MEM_SLOTS)],
  [Req.ADD_MEM_REG, rule(1, ProtocolFeature.CONFIGURE_MEM_SLOTS)],
  // "No file descriptors SHOULD be passed", yet QEMU sends the region's: one is taken and closed.
  [Req.REM_MEM_REG, rule((m) => Math.min(m.fds.length, 1), ProtocolFeature.CONFIGURE_MEM_SLOTS)],
  [Req.SET_VRING_NUM, rule(0)],
  [Req.SET_VRING_ADDR, rule(0)],
  [Req.SET_VRING_BASE, rule(0)],
  [Req.GET_VRING_BASE, rule(0)],
  [Req.SET_VRING_KICK, rule(vringFd)],
  [Req.SET_VRING_CALL, rule(vringFd)],
  [Req.SET_VRING_ERR, rule(vringFd)],
  [Req.SET_VRING_ENABLE, rule(0, PROTOCOL_FEATURES)],
  [Req.NET_SET_MTU, rule(0, ProtocolFeature.NET_MTU)],
  [Req.GET_INFLIGHT_FD, rule(0, ProtocolFeature.INFLIGHT_SHMFD, true)],
  [Req.SET_INFLIGHT_FD, rule(1, ProtocolFeature.INFLIGHT_SHMFD, true)],
  [Req.SET_STATUS, rule(0, ProtocolFeature.STATUS)],
  [Req.GET_STATUS, rule(0, ProtocolFeature.STATUS)],
  // Never offered (no LOG_SHMFD, no BACKEND_REQ), but they carry an fd: taken and closed.
  [Req.SET_LOG_FD, { ...rule(1), served: false }],
  [Req.SET_BACKEND_REQ_FD, { ...rule(1), served: false }],
]);

/** The fds a message must carry by its rule. */
export function expectedFds(r: RequestRule, m: Message): number {
  return typeof r.fds === 'number' ? r.fds : r.fds(m);
}
