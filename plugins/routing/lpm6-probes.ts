// IPv6 addresses that test a route table: for each prefix its first and last address, the
// addresses just outside it and one inside, and random ones; shared by the Poptrie tests.

/** `base` with the bits from `from` on drawn from `rand` (a random address under a prefix). */
export function randomBelow(rand: () => number, base: ArrayLike<number>, from: number): Uint8Array {
  const out = Uint8Array.from(base);
  for (let b = from >>> 3; b < 16; b++) {
    const keep = from - 8 * b;
    const keepMask = keep <= 0 ? 0 : (0xff00 >>> keep) & 0xff;
    out[b] = (out[b] & keepMask) | (rand() & 0xff & ~keepMask);
  }
  return out;
}

/** a + delta (delta = +1 or -1), wrapping around the address space. */
export function step(a: Uint8Array, delta: number): Uint8Array {
  const out = Uint8Array.from(a);
  for (let b = 15; b >= 0; b--) {
    const v = out[b] + delta;
    out[b] = v & 255;
    if (v >= 0 && v <= 255) break;
  }
  return out;
}

/** Addresses that matter to each prefix (its first and last, the neighbours outside, one inside) and `random` random ones. */
export function probes(rand: () => number, prefixes: readonly { bytes: ArrayLike<number>; length: number }[], random: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const p of prefixes) {
    const first = randomBelow(() => 0, p.bytes, p.length);
    const last = randomBelow(() => 255, p.bytes, p.length);
    out.push(first, last, step(first, -1), step(last, 1), randomBelow(rand, p.bytes, p.length));
  }
  for (let i = 0; i < random; i++) out.push(randomBelow(rand, new Uint8Array(16), 0));
  return out;
}
