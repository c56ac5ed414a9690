// Guest interrupts: a write to the queue's call eventfd (~430 ns here), so the data path
// asks for one per burst and only when the guest wants it (see Virtqueue.publishUsed).
//
// Within a PMD's round the used rings it writes are published together: each index (a
// packed ring's first used flags) with a plain store as its burst ends, then one full
// barrier for all of them before the guests' event fields are read (VIRTIO v1.2, 2.7.8.2
// and 2.8.10 ask that the index be visible before that read). A full barrier waits for
// every store before it, the frames just written into cold guest buffers included: one a
// round instead of one a burst (packed rings: 0.975 to 1.0 of the time a frame). Plain
// stores are seen in program order only where the CPU keeps stores in order (x86's TSO);
// elsewhere each publish keeps its own barrier.
import { eventfdSignal, lastCallInterrupted } from '../sys/libc.ts';
import { DOORBELL_CALL_INTERRUPTED, DOORBELL_IN_CALL } from '../vhost/dataplane-link.ts';
import { COUNTERS_PER_PORT } from './counters.ts';
import type { QueueOwner } from './guest-io.ts';

/** What an interrupt needs of a queue: its ring, its call eventfd, and its port (by its counters). */
export type CalledQueue = Pick<QueueOwner, 'queue' | 'callFd' | 'counterBase'>;

/** The PMD's doorbell, where each write to a call eventfd is marked (see signalGuest). */
let callBell: Int32Array<ArrayBufferLike> = new Int32Array(DOORBELL_CALL_INTERRUPTED + 1);

/** This thread's calls are marked in `doorbell` (the PMD's) from now on. */
export function markCallsIn(doorbell: Int32Array): void {
  callBell = doorbell;
}

/**
 * callFd -1: the frontend gave no call fd (VHOST_USER_VRING_NOFD_MASK), so it polls. The
 * write blocks if the frontend made the eventfd blocking and filled its counter (O_NONBLOCK
 * is the open file's, and it may set it again once the write waits): marked with the port
 * (its index + 1), so that the supervisor's watchdog interrupts it. Interrupted, the queue
 * is failed (not signalled again) and the port named in the doorbell, for the supervisor
 * to quarantine.
 */
function signalGuest(q: CalledQueue): void {
  if (q.callFd < 0 || q.queue.failed) return;
  const port = q.counterBase / COUNTERS_PER_PORT;
  callBell[DOORBELL_IN_CALL] = port + 1;
  const signalled = eventfdSignal(q.callFd);
  callBell[DOORBELL_IN_CALL] = 0;
  // EINTR only if the write waited: a thread merely slow to run completes its write.
  if (signalled || !lastCallInterrupted()) return;
  q.queue.fail('its call eventfd blocked the PMD (made blocking with a full counter): not signalled again');
  callBell[DOORBELL_CALL_INTERRUPTED] = port + 1;
}

const STORES_IN_ORDER = process.arch === 'x64' || process.arch === 'ia32';
/** Publishes waiting for the round's barrier, at most: more settle at once. */
const MOST_WAITING = 64;
const waitingQueues: (CalledQueue | null)[] = new Array<CalledQueue | null>(MOST_WAITING).fill(null);
const waitingFrom = new Int32Array(MOST_WAITING);
let waiting = 0;
let gathering = false;
/** Atomics.add on it is the barrier (a locked instruction on x86). */
const barrierWord = new Int32Array(new SharedArrayBuffer(4));

/** From here to settleCalls(), this thread's publishes share one barrier (the PMD's round). */
export function gatherCalls(): void {
  settleWaiting();
  gathering = STORES_IN_ORDER;
}

/**
 * Publishes the used buffers queue `q` returned since `from`, and interrupts the guest if
 * it wants one: now, or at settleCalls() while gathering.
 */
export function publishAndCall(q: CalledQueue, from: number): void {
  const vq = q.queue;
  if (!gathering) {
    if (vq.publishUsed(from)) signalGuest(q);
    return;
  }
  // A queue published again in the round: the decision covers its buffers since the first
  // `from`, as one publish of them all would (at most a ring of a split ring's 2^15).
  for (let i = 0; i < waiting; i++) {
    if (waitingQueues[i] === q) {
      vq.exposeUsed(from);
      return;
    }
  }
  if (!vq.exposeUsed(from)) return;
  waitingQueues[waiting] = q;
  waitingFrom[waiting] = from;
  if (++waiting === MOST_WAITING) settleWaiting();
}

/** The end of the round: the barrier, then each waiting guest's interrupt if it wants one; publishes are immediate again. */
export function settleCalls(): void {
  settleWaiting();
  gathering = false;
}

function settleWaiting(): void {
  if (waiting === 0) return;
  Atomics.add(barrierWord, 0, 1);
  for (let i = 0; i < waiting; i++) {
    const q = waitingQueues[i]!;
    if (q.queue.callWanted(waitingFrom[i])) signalGuest(q);
    waitingQueues[i] = null;
  }
  waiting = 0;
}
