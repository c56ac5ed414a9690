// A guest's side of a test device (startDevice) as the routed tests use it: frames sent from
// buffers reused once the backend took them, RX buffers kept posted and reused once read,
// what arrives parsed (and when). A test device's guest RAM is a few MiB: nothing here
// allocates guest memory per frame, so a test may send and receive for as long as it likes.
import { NET_HDR_LEN } from '../../src/virtio/constants.ts';
import type { VirtioNetDevice } from './vhost-frontend.ts';
import { parseFrame, type ParsedFrame } from './frames.ts';
import { waitFor } from './traffic.ts';

const BUFFER_BYTES = 2048;

export interface TestGuest {
  /** every frame received so far, parsed, in order */
  got: ParsedFrame[];
  /** when each of `got` was read (performance.now()) */
  at: number[];
  /** sends frames in chunks, waiting for the backend to take each chunk */
  send(frames: readonly Uint8Array[], chunk?: number): Promise<void>;
  /** sends what the TX ring has room for now, without waiting; returns how many it sent */
  offer(frames: readonly Uint8Array[]): number;
  /** reads what arrived; returns `got` */
  poll(): ParsedFrame[];
}

export function testGuest(dev: VirtioNetDevice, rxBuffers = 200): TestGuest {
  const ram = dev.ram;
  const rxAt = new Map<number, number>();
  const post = (off: number) => {
    const head = dev.rx.addChain([{ addr: ram.gpa(off), len: BUFFER_BYTES, write: true }]);
    dev.rx.makeAvailable(head);
    rxAt.set(head, off);
  };
  for (let k = 0; k < rxBuffers; k++) post(ram.alloc(BUFFER_BYTES));
  dev.kick();
  // TX buffers: free ones, and those the backend has not given back yet (by chain head).
  const txFree: number[] = [];
  const txBusy = new Map<number, number>();
  const reclaim = () => {
    for (const used of dev.tx.takeUsed()) {
      txFree.push(txBusy.get(used.id)!);
      txBusy.delete(used.id);
    }
  };
  const put = (frame: Uint8Array) => {
    if (NET_HDR_LEN + frame.length > BUFFER_BYTES) throw new RangeError(`a ${frame.length}-byte frame is longer than a test guest's ${BUFFER_BYTES}-byte buffers`);
    const off = txFree.pop() ?? ram.alloc(BUFFER_BYTES);
    ram.bytes.fill(0, off, off + NET_HDR_LEN);
    ram.bytes.set(frame, off + NET_HDR_LEN);
    const head = dev.tx.addChain([{ addr: ram.gpa(off), len: NET_HDR_LEN + frame.length }]);
    dev.tx.makeAvailable(head);
    txBusy.set(head, off);
  };
  const got: ParsedFrame[] = [];
  const at: number[] = [];
  return {
    got,
    at,
    async send(frames, chunk = 128) {
      for (let from = 0; from < frames.length; from += chunk) {
        const part = frames.slice(from, from + chunk);
        reclaim();
        for (const f of part) put(f);
        dev.kick();
        await waitFor(`the backend to take ${part.length} frames`, () => (reclaim(), txBusy.size === 0) || undefined, 5000);
      }
    },
    offer(frames) {
      reclaim();
      // Never more in flight than the ring holds (a quarter kept spare).
      const room = Math.max(0, Math.floor((dev.tx.size * 3) / 4) - txBusy.size);
      const part = frames.slice(0, room);
      for (const f of part) put(f);
      dev.kick();
      return part.length;
    },
    poll() {
      for (const used of dev.rx.takeUsed()) {
        const off = rxAt.get(used.id)!;
        rxAt.delete(used.id);
        got.push(parseFrame(ram.bytes.slice(off + NET_HDR_LEN, off + used.len)));
        at.push(performance.now());
        post(off);
      }
      dev.kick();
      return got;
    },
  };
}
