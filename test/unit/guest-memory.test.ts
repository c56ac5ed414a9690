// Guest memory translation, including regions larger than one window (seen through
// overlapping windows), and the mapping of a region's windows into SharedArrayBuffers.
import t from 'tap';
import * as sys from '../../src/sys/libc.ts';
import { GuestMemory, mapRegionWindows, WINDOW_BYTES, WINDOW_OVERLAP } from '../../src/virtio/guest-memory.ts';
import { releaseSharedMapping } from '../../src/sys/shared-mapping.ts';

t.test('a 2.5 GiB region through windows; every range found whole, none outside', async (t) => {
  const size = 2.5 * 2 ** 30;
  const fd = sys.memfdCreate('big-guest');
  sys.ftruncate(fd, size); // sparse: no memory is used until touched
  const windows = mapRegionWindows(fd, 0, size, sys.fstatBlockSize(fd));
  t.teardown(() => {
    windows.forEach(releaseSharedMapping);
    sys.close(fd);
  });
  const gpa = 0x100000000;
  const mem = new GuestMemory([{ guestPhysAddr: gpa, userAddr: 0x7f0000000000, size, windows }]);
  t.equal(mem.count, 3, 'three windows');
  const boundary = WINDOW_BYTES - WINDOW_OVERLAP; // where the second window starts
  for (const at of [0, boundary - 100, WINDOW_BYTES - 100, size - 9000]) {
    t.ok(mem.translate(gpa + at, 9000), `9000 bytes at +${at} lie in one window`);
    mem.bytes[mem.window][mem.offset] = at & 0xff;
    mem.translate(gpa + at, 1);
    t.equal(mem.bytes[mem.window][mem.offset], at & 0xff, 'and every window shows the same memory');
  }
  t.notOk(mem.translate(gpa + size - 10, 20), 'a range past the end is refused');
  t.notOk(mem.translate(gpa - 1, 2), 'a range before the start is refused');
  t.ok(mem.translateUserAddr(0x7f0000000000 + size - 16, 16), 'frontend addresses too');
  // A descriptor's address as its two words: the high word counts (gpa is past 4 GiB).
  const words = new Uint32Array(4);
  const put = (address: number) => {
    words[2] = address % 2 ** 32;
    words[3] = Math.floor(address / 2 ** 32);
  };
  for (const at of [0, WINDOW_BYTES - 100, size - 9000]) {
    put(gpa + at);
    t.ok(mem.translateAt(words, 2, 9000), `translateAt(): 9000 bytes at +${at}`);
    const { window, offset } = mem;
    mem.translate(gpa + at, 9000);
    t.same([window, offset], [mem.window, mem.offset], 'where translate() finds them');
  }
  put(gpa + size - 10);
  t.notOk(mem.translateAt(words, 2, 20), 'translateAt(): a range past the end is refused');
  // A descriptor's high word may be anything: past 2^53 the address is rounded as a double,
  // and still lies past every region (their ends are below 2^53).
  for (const high of [0x200000, 0xffffffff]) {
    words[2] = 0;
    words[3] = high;
    t.notOk(mem.translateAt(words, 2, 1), `translateAt(): an address of high word ${high.toString(16)} is refused`);
  }
  // No address a descriptor could hold: refused, not wrapped into one inside memory.
  const small = mapRegionWindows(fd, 0, 1 << 20, sys.fstatBlockSize(fd));
  t.teardown(() => small.forEach(releaseSharedMapping));
  const low = new GuestMemory([{ guestPhysAddr: 0, userAddr: 0x7f0000000000, size: 1 << 20, windows: small }]);
  t.ok(low.translate(0, 16), 'memory from address 0');
  for (const bad of [NaN, Infinity, -Infinity, -16, 2 ** 64, 2 ** 64 + 2 ** 20, 0.5]) t.notOk(low.translate(bad, 16), `translate(${bad}) refused`);
});
