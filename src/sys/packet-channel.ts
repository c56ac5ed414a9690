// Messages between vrouter's processes: msgpackr values over an AF_UNIX SOCK_SEQPACKET
// socket, with fds attached (SCM_RIGHTS). A value larger than one packet goes in pieces,
// its fds with the first. Sending never blocks: packets the socket cannot take yet wait
// in order and are sent from the event loop.
import { pack, unpack } from './msgpack.ts';
import { closeAll, MAX_PACKET_BYTES, recvPacket, sendPacket, watchReadable, type Watch } from './libc.ts';

const MORE = 1;
const LAST = 0;
/** how soon a packet the socket refused is tried again */
const RETRY_MS = 1;
/** The longest value taken: the pieces of a longer one are dropped (with its fds), not gathered without end. */
const MAX_MESSAGE_BYTES = 256 << 20;
/** Packets read at one wake-up: a peer that never stops sending does not hold the event loop (the watch fires again). */
const PACKETS_PER_WAKE = 4096;

export interface ChannelHandlers {
  /** a whole value and the fds that came with it (the receiver owns them) */
  message(value: unknown, fds: number[]): void;
  /** the peer closed its end, or died */
  closed(): void;
  /**
   * For an end that does not trust its peer (the supervisor's, of a data-plane process):
   * what went wrong with what the peer sent (too long, or `message` threw on it), instead
   * of an exception in the event loop.
   */
  invalid?(why: string): void;
}

/** A value as text for the log, short, whatever it holds (msgpackr decodes 64-bit integers as BigInt, which JSON.stringify refuses). */
function excerpt(value: unknown): string {
  try {
    return String(JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))).slice(0, 200);
  } catch {
    return '(cannot be shown)';
  }
}

export class PacketChannel {
  readonly fd: number;
  private readonly handlers: ChannelHandlers;
  private readonly watch: Watch;
  private readonly outbox: { data: Uint8Array; fds: readonly number[] }[] = [];
  private retry: NodeJS.Timeout | null = null;
  private readonly inbox = new Uint8Array(MAX_PACKET_BYTES);
  private pieces: Uint8Array[] = [];
  private pieceFds: number[] = [];
  /** bytes of the pieces gathered */
  private pieceBytes = 0;
  /** the rest of a message too long is being skipped, up to its last piece */
  private skipping = false;
  private open = true;

  private readonly maxMessageBytes: number;

  /** maxMessageBytes: see MAX_MESSAGE_BYTES (tests lower it) */
  constructor(fd: number, handlers: ChannelHandlers, maxMessageBytes = MAX_MESSAGE_BYTES) {
    this.fd = fd;
    this.handlers = handlers;
    this.maxMessageBytes = maxMessageBytes;
    this.watch = watchReadable(fd, () => this.receive());
  }

  /**
   * Sends a value. The fds are sent as they are when the packet leaves: the caller keeps
   * them open until the peer answered (or the channel closed).
   */
  send(value: unknown, fds: readonly number[] = []): void {
    if (!this.open) return;
    const bytes = pack(value);
    const room = MAX_PACKET_BYTES - 1;
    for (let off = 0; off === 0 || off < bytes.length; off += room) {
      const piece = bytes.subarray(off, off + room);
      const data = new Uint8Array(piece.length + 1);
      data[0] = off + room < bytes.length ? MORE : LAST;
      data.set(piece, 1);
      this.outbox.push({ data, fds: off === 0 ? fds : [] });
    }
    this.flush();
  }

  private flush(): void {
    this.retry = null;
    while (this.open && this.outbox.length > 0) {
      const next = this.outbox[0];
      let sent: boolean;
      try {
        sent = sendPacket(this.fd, next.data, next.fds);
      } catch {
        this.close();
        this.handlers.closed();
        return;
      }
      if (!sent) {
        this.retry ??= setTimeout(() => this.flush(), RETRY_MS);
        return;
      }
      this.outbox.shift();
    }
  }

  private receive(): void {
    for (let packets = 0; this.open && packets < PACKETS_PER_WAKE; packets++) {
      let got;
      try {
        got = recvPacket(this.fd, this.inbox);
      } catch {
        got = { length: 0, fds: [], fdsTruncated: false };
      }
      if (got === null) return;
      if (got.length === 0) {
        this.close();
        this.handlers.closed();
        return;
      }
      if (this.skipping) {
        closeAll(got.fds);
        this.skipping = this.inbox[0] === MORE;
        continue;
      }
      this.pieces.push(this.inbox.slice(1, got.length));
      this.pieceFds.push(...got.fds);
      this.pieceBytes += got.length - 1;
      if (this.pieceBytes > this.maxMessageBytes) {
        // Dropped, and so is the rest of it, up to its last piece.
        this.handlers.invalid?.(`a message longer than ${this.maxMessageBytes} bytes`);
        closeAll(this.pieceFds);
        this.pieces = [];
        this.pieceFds = [];
        this.pieceBytes = 0;
        this.skipping = this.inbox[0] === MORE;
        continue;
      }
      if (this.inbox[0] === MORE) continue;
      const whole = this.pieces.length === 1 ? this.pieces[0] : Buffer.concat(this.pieces);
      const fds = this.pieceFds;
      this.pieces = [];
      this.pieceFds = [];
      this.pieceBytes = 0;
      let value: unknown;
      try {
        value = unpack(whole);
      } catch {
        closeAll(fds);
        continue;
      }
      if (this.handlers.invalid === undefined) {
        this.handlers.message(value, fds);
        continue;
      }
      try {
        this.handlers.message(value, fds);
      } catch (err) {
        this.handlers.invalid(`a message it could not take (${(err as Error)?.message ?? String(err)}): ${excerpt(value)}`);
      }
    }
  }

  /** Stops watching and closes the socket (idempotent); what was not sent is dropped. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    if (this.retry !== null) clearTimeout(this.retry);
    this.outbox.length = 0;
    this.watch.stop();
    closeAll([this.fd, ...this.pieceFds]);
  }
}
