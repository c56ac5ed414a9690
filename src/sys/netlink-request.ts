// Changes to a network namespace's tables made through netlink and acknowledged before the
// call returns: for the few made while a port opens (a Linux mirror's addresses), where the
// caller is synchronous and each answer takes microseconds.
import { closeAll, pollSet, SysError, waitReadable } from './libc.ts';
import { decodeMessages } from './netlink.ts';
import { netlinkReceive, netlinkSend, NOTHING_PENDING, openRouteSocket } from './netlink-socket.ts';

/** A request and what it does, for errors: built with the seq its acknowledgement will carry. */
export interface AckedRequest {
  what: string;
  build: (seq: number) => Uint8Array;
}

/** An acknowledgement is a few dozen bytes; room for an extended one quoting the request. */
const ANSWER_BYTES = 8192;

/**
 * Sends each request in turn on a NETLINK_ROUTE socket in `netns` (null: the caller's) and
 * waits for its acknowledgement before the next. Throws SysError with the kernel's reason
 * for the first refused (nothing after it is sent), or an Error if one is not answered in
 * timeoutMs.
 */
export function requestAll(netns: string | null, requests: readonly AckedRequest[], timeoutMs = 5000): void {
  const fd = openRouteSocket({ netns, groups: [], receiveBufferBytes: 64 * 1024 });
  try {
    const answer = new Uint8Array(ANSWER_BYTES);
    const readable = pollSet([fd]);
    requests.forEach((r, i) => {
      const seq = i + 1;
      netlinkSend(fd, r.build(seq));
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const n = netlinkReceive(fd, answer);
        if (n === NOTHING_PENDING) {
          const left = deadline - Date.now();
          if (left <= 0) throw new Error(`${r.what}: no answer from the kernel in ${timeoutMs} ms`);
          waitReadable(readable, 1, left * 1000);
          continue;
        }
        // A socket in no group gets answers only; one too large for the buffer is not an acknowledgement.
        if (n < 0) continue;
        const ack = decodeMessages(answer.subarray(0, n)).find((ev) => ev.kind === 'ack' && ev.seq === seq);
        if (ack === undefined || ack.kind !== 'ack') continue;
        if (ack.errno !== 0) throw new SysError(r.what, ack.errno, ack.message ?? '');
        break;
      }
    });
  } finally {
    closeAll([fd]);
  }
}
