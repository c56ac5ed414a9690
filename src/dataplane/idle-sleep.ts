// An idle PMD's sleep: it asks the guests to kick, checks once more for work, then blocks
// on the kick eventfds of the queues it polls, its own wake eventfd and the fds of its
// uplink ports until one fires or the timeout passes (ppoll: microseconds). The sleeping
// flag in the doorbell is set before the last check, so whoever gives it work either is
// seen by that check or sees it asleep.
import { DOORBELL_COMMANDS, DOORBELL_SLEEPING } from '../vhost/dataplane-link.ts';
import { eventfdDrain, isReady, pollSet, waitReadable } from '../sys/libc.ts';
import type { QueueOwner } from './guest-io.ts';
import type { SpscRing } from './spsc-ring.ts';

/** the longest sleep while a polled queue has no kick fd to wake us */
const KICKLESS_SLEEP_US = 50;

export class IdleSleep {
  private readonly doorbell: Int32Array;
  private readonly wakeFd: number;
  private readonly ringsIn: SpscRing[];
  /** the guest TX queues polled: each is asked to kick before a sleep */
  private polled: QueueOwner[] = [];
  /** what a sleep waits on: our wake eventfd, then the kick fd of each polled queue */
  private set: Uint8Array = new Uint8Array(0);
  private fds: Int32Array = new Int32Array(0);
  /** how many of `fds` are eventfds (drained on waking); the rest are interfaces */
  private eventfds = 0;
  /** some polled queue has no kick fd: sleeps stay short, nothing would wake us */
  private kickless = false;

  constructor(doorbell: Int32Array, wakeFd: number, ringsIn: SpscRing[]) {
    this.doorbell = doorbell;
    this.wakeFd = wakeFd;
    this.ringsIn = ringsIn;
    this.watch([]);
  }

  /**
   * The queues polled changed; `readable`: fds of uplink interfaces, which wake the sleep
   * when a frame waits (read by the next poll round, not here).
   */
  watch(polled: QueueOwner[], readable: number[] = []): void {
    this.polled = polled;
    const kickFds = polled.map((q) => q.kickFd).filter((fd) => fd >= 0);
    this.kickless = kickFds.length < polled.length;
    this.eventfds = 1 + kickFds.length;
    this.fds = Int32Array.from([this.wakeFd, ...kickFds, ...readable]);
    this.set = pollSet([...this.fds]);
  }

  /** Sleeps up to timeoutUs unless there is work; `seenCommands`: the doorbell count already handled. */
  sleep(timeoutUs: number, seenCommands: number): void {
    const bell = this.doorbell;
    const polled = this.polled;
    Atomics.store(bell, DOORBELL_SLEEPING, 1);
    let busy = Atomics.load(bell, DOORBELL_COMMANDS) !== seenCommands;
    for (let q = 0; q < polled.length; q++) {
      polled[q].queue.enableNotifications();
      if (polled[q].queue.pending() !== 0) busy = true;
    }
    for (let r = 0; r < this.ringsIn.length; r++) if (this.ringsIn[r].size() > 0) busy = true;
    if (!busy) {
      const set = this.set;
      const count = this.fds.length;
      if (waitReadable(set, count, this.kickless ? Math.min(timeoutUs, KICKLESS_SLEEP_US) : timeoutUs) > 0) {
        for (let i = 0; i < this.eventfds; i++) if (isReady(set, i)) eventfdDrain(this.fds[i]);
      }
    }
    Atomics.store(bell, DOORBELL_SLEEPING, 0);
    for (let q = 0; q < polled.length; q++) polled[q].queue.suppressNotifications();
  }
}
