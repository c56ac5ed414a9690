// For the tests of the tables: where a FIB sends an address, in words the tests compare.
import { MEMBER_WORDS, type openFib } from './fib.ts';

/** "none", "local", or the members of the address's group (their words, space-separated), comma-separated. */
export function fibHop(fib: ReturnType<typeof openFib>, address: string): string {
  let group: number;
  if (address.includes(':')) {
    const bytes = new Uint8Array(16);
    const [head, tail = ''] = address.split('::');
    const h = head ? head.split(':') : [];
    const tl = tail ? tail.split(':') : [];
    [...h, ...Array(8 - h.length - tl.length).fill('0'), ...tl].forEach((g, i) => bytes.set([parseInt(g, 16) >> 8, parseInt(g, 16) & 255], 2 * i));
    group = fib.lpm6.lookup(bytes, 0);
  } else group = fib.lpm4.lookup(address.split('.').reduce((a, b) => a * 256 + Number(b), 0));
  if (group === 0) return 'none';
  const w = fib.nextHops.words;
  const start = w[fib.nextHops.groupBase + 2 * group];
  const count = w[fib.nextHops.groupBase + 2 * group + 1];
  const members = [];
  for (let m = 0; m < count; m++) members.push(Array.from(w.subarray(fib.nextHops.memberBase + (start + m) * MEMBER_WORDS, fib.nextHops.memberBase + (start + m + 1) * MEMBER_WORDS)).join(' '));
  return members.join(', ');
}
