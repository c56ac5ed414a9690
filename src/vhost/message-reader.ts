// Framing of one frontend's vhost-user stream: reads whole messages (header, payload, the
// fds that came with them) without blocking, and within bounds, so that one frontend that
// writes as fast as it can neither starves the control thread (the other ports, PMD
// answers, timers), nor takes more of it than its port's budget, nor makes it hold an
// unbounded number of messages and fds.
import type { ControlBudget } from './control-budget.ts';
import { closeAll, MAX_FDS_PER_MESSAGE, peerCredentials, recvMsg, watchReadable, type Watch } from '../sys/libc.ts';
import { fuseFileSystems } from '../sys/fuse-files.ts';
import { decodeHeader, FLAG_NEED_REPLY, FLAG_REPLY, HEADER_LEN, MAX_PAYLOAD, ProtocolError, requestName, VERSION, VERSION_MASK, type Header } from './protocol.ts';

export interface Message extends Header {
  payload: Uint8Array;
  fds: number[];
}

/** Messages taken per readable event: then the event loop serves everyone else. */
const MESSAGES_PER_WAKEUP = 16;
/** Reading pauses while this many messages, or fds, wait to be handled. */
export const MAX_QUEUED_MESSAGES = 32;
export const MAX_QUEUED_FDS = 64;

/**
 * Fds of files on FUSE that frontends sent, kept open and never used: closing one waits for
 * its daemon's answer (fuse-files.ts), which a frontend may never give. The frontend is
 * disconnected, and its port pays for them (MessageSink.keptFiles): each one costs this
 * thread an fd for good.
 */
const keptFuseFiles: number[] = [];

/** "Header": the version's 2 bits, "Bit 2 is the reply flag", "Bit 3 is the need_reply flag"; no other bit has a meaning. */
const KNOWN_FLAGS = VERSION_MASK | FLAG_REPLY | FLAG_NEED_REPLY;

export interface MessageSink {
  /** a whole message arrived (its fds are the sink's to close) */
  message(m: Message): void;
  /** the frontend hung up, or broke the framing: the connection is over */
  end(reason: string): void;
  /** `count` fds it sent, of files on FUSE, are kept open for good (keptFuseFiles); end() follows */
  keptFiles(count: number): void;
}

export class MessageReader {
  private readonly fd: number;
  private readonly sink: MessageSink;
  private readonly watch: Watch;
  private readonly buf = new Uint8Array(HEADER_LEN + MAX_PAYLOAD);
  private have = 0;
  private header: Header | null = null;
  private fds: number[] = [];
  private readonly budget: ControlBudget;
  private ended = false;
  /** the owner holds too much already (backlog) */
  private full = false;
  /** the port's budget is spent: reading resumes when this timer fires */
  private waitForBudget: NodeJS.Timeout | null = null;
  private watchPaused = false;
  /** the frontend's pid (SO_PEERCRED), read when it first sends fds; 0 unknown */
  private peerPid = -1;

  constructor(fd: number, sink: MessageSink, budget: ControlBudget) {
    this.fd = fd;
    this.sink = sink;
    this.budget = budget;
    this.watch = watchReadable(fd, () => this.readAvailable());
  }

  /** Stops reading (before the socket is closed) and closes the fds of a partial message. */
  stop(): void {
    this.ended = true;
    this.watch.stop();
    if (this.waitForBudget !== null) clearTimeout(this.waitForBudget);
    this.waitForBudget = null;
    closeAll(this.fds);
    this.fds = [];
  }

  /** Called by the owner with what it still holds: reading pauses and resumes by it. */
  backlog(messages: number, fds: number): void {
    this.full = messages >= MAX_QUEUED_MESSAGES || fds >= MAX_QUEUED_FDS;
    this.updateWatch();
  }

  private updateWatch(): void {
    if (this.ended) return;
    const pause = this.full || this.waitForBudget !== null;
    if (pause && !this.watchPaused) this.watch.pause();
    else if (!pause && this.watchPaused) this.watch.resume();
    this.watchPaused = pause;
  }

  /** Reading waits until the budget holds a wake-up's worth of messages. */
  private awaitBudget(): void {
    this.waitForBudget = setTimeout(() => {
      this.waitForBudget = null;
      this.updateWatch();
    }, Math.ceil(this.budget.msUntil(MESSAGES_PER_WAKEUP)));
    this.updateWatch();
  }

  private readAvailable(): void {
    try {
      for (let taken = 0; taken < MESSAGES_PER_WAKEUP && !this.ended && !this.full && this.waitForBudget === null; ) {
        if (this.header === null && this.have === 0 && !this.budget.holds(1)) return this.awaitBudget();
        const want = this.header === null ? HEADER_LEN - this.have : HEADER_LEN + this.header.size - this.have;
        if (want > 0) {
          const got = recvMsg(this.fd, this.buf.subarray(this.have, this.have + want));
          if (got === null) return;
          const { others, fuse } = this.setAsideFuseFiles(got.fds);
          this.fds.push(...others);
          if (fuse !== null) {
            this.sink.keptFiles(got.fds.length - others.length);
            throw new ProtocolError(`an fd of a file on ${fuse}, where a close, stat or statfs of it may wait for a process outside the kernel (a FUSE daemon the frontend chose): refused, and kept open unused`);
          }
          if (got.fdsTruncated || this.fds.length > MAX_FDS_PER_MESSAGE) throw new ProtocolError(`more than ${MAX_FDS_PER_MESSAGE} fds in one message`);
          if (got.length === 0) return this.finish('frontend disconnected');
          this.have += got.length;
        }
        if (this.header === null && this.have === HEADER_LEN) this.header = checkedHeader(this.buf);
        if (this.header !== null && this.have === HEADER_LEN + this.header.size) {
          const m: Message = { ...this.header, payload: this.buf.slice(HEADER_LEN, this.have), fds: this.fds };
          this.header = null;
          this.have = 0;
          this.fds = [];
          taken++;
          this.budget.spend(1);
          this.sink.message(m);
        }
      }
    } catch (err) {
      this.finish(`protocol error: ${(err as Error).message}`);
    }
  }

  /**
   * Moves the fds of files on FUSE among those just received to keptFuseFiles, before
   * anything could close or stat them: returns the others, and the file system of the last
   * one moved (null: none, the message goes on).
   */
  private setAsideFuseFiles(fds: number[]): { others: number[]; fuse: string | null } {
    if (fds.length === 0) return { others: fds, fuse: null };
    if (this.peerPid < 0) {
      try {
        this.peerPid = peerCredentials(this.fd).pid;
      } catch {
        this.peerPid = 0;
      }
    }
    const types = fuseFileSystems(fds, this.peerPid);
    let fuse: string | null = null;
    const others = fds.filter((fd, i) => {
      if (types[i] === null) return true;
      keptFuseFiles.push(fd);
      fuse = types[i];
      return false;
    });
    return { others, fuse };
  }

  private finish(reason: string): void {
    if (this.ended) return;
    this.stop();
    this.sink.end(reason);
  }
}

function checkedHeader(bytes: Uint8Array): Header {
  const h = decodeHeader(bytes);
  const name = requestName(h.request);
  if ((h.flags & VERSION_MASK) !== VERSION || (h.flags & FLAG_REPLY) !== 0 || (h.flags & ~KNOWN_FLAGS) !== 0) {
    throw new ProtocolError(`${name}: bad flags 0x${h.flags.toString(16)}`);
  }
  if (h.size > MAX_PAYLOAD) throw new ProtocolError(`${name}: payload of ${h.size} bytes`);
  return h;
}
