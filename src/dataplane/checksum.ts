// Internet checksums (RFC 1071, RFC 1624): the data path completes and recomputes them
// (offloads.ts), and the plugin API hands the same functions to the stages (pipeline/net.ts).

/** Adds the 16-bit big-endian words of d[start..end) to `sum` (an odd last byte is padded). */
export function onesSum(d: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start;
  for (; i + 1 < end; i += 2) sum += (d[i] << 8) | d[i + 1];
  if (i < end) sum += d[i] << 8;
  // Fold now and then: a 9000-byte frame stays far below 2^53 anyway, but keep it small.
  return (sum & 0xffff) + Math.floor(sum / 65536);
}

/** The checksum field for a sum: its folded ones' complement. */
export function finishChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** The IPv4 header checksum as it should be (the field itself counted as zero). */
export function ipv4HeaderChecksum(d: Uint8Array, ip: number, headerBytes: number): number {
  return finishChecksum(onesSum(d, ip + 12, ip + headerBytes, onesSum(d, ip, ip + 10)));
}

/** RFC 1624 eqn. 3: the checksum after one 16-bit word of the data went from `from` to `to`. */
export function adjustChecksum(check: number, from: number, to: number): number {
  return finishChecksum((~check & 0xffff) + (~from & 0xffff) + to);
}

/** Sum of the IPv6 pseudo-header (RFC 8200 8.1) for an upper-layer packet of `length` bytes. */
export function ipv6PseudoSum(d: Uint8Array, ip: number, length: number, protocol: number): number {
  return onesSum(d, ip + 8, ip + 40, length + protocol);
}

/** Sum of the IPv4 pseudo-header (RFC 793) for a TCP/UDP segment of `length` bytes. */
export function ipv4PseudoSum(d: Uint8Array, ip: number, length: number, protocol: number): number {
  return onesSum(d, ip + 12, ip + 20, length + protocol);
}
