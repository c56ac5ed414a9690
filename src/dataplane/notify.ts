// Guest interrupts: a write to the queue's call eventfd (~430 ns here), so the data path
// asks for one per burst and only when the guest wants it (see Virtqueue.publishUsed).
import { eventfdSignal } from '../sys/libc.ts';

/** callFd -1: the frontend gave no call fd (VHOST_USER_VRING_NOFD_MASK), so it polls. */
export function signalGuest(callFd: number): void {
  if (callFd >= 0) eventfdSignal(callFd);
}
