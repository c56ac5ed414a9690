// A file's range mapped inside a SharedArrayBuffer: the file's bytes seen through it from
// any thread, no external memory counted for it, and the buffer kept for reuse once released.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { Worker } from 'node:worker_threads';
import * as sys from '../../src/sys/libc.ts';
import { mapIntoSharedBuffer, releaseSharedMapping } from '../../src/sys/shared-mapping.ts';

const PAGE = 4096;

t.test('a file range seen through the buffer both ways and from a worker, none of it external memory; released, the buffer is kept for the next', async (t) => {
  const size = 256 * 2 ** 20;
  const fd = sys.memfdCreate('shared-mapping-test');
  t.teardown(() => sys.close(fd));
  sys.ftruncate(fd, size + 2 * PAGE);
  // The file as the frontend sees it, mapped on its own.
  const fileAddr = sys.mmapShared(fd, size + 2 * PAGE);
  t.teardown(() => sys.munmap(fileAddr, size + 2 * PAGE));
  const file = new Uint8Array(sys.view(fileAddr, size + 2 * PAGE));
  const fileOffset = PAGE + 24; // not at a page: the mapping starts at the page it lies in
  const external = getHeapStatistics().external_memory;
  const m = mapIntoSharedBuffer(fd, fileOffset, size, sys.fstatBlockSize(fd));
  t.ok(getHeapStatistics().external_memory - external < 2 ** 20, `mapping ${size} bytes counts no external memory (${getHeapStatistics().external_memory - external} bytes more)`);
  t.equal(m.offset % 8, 0, `the range starts 8-aligned in its buffer (at ${m.offset})`);
  t.ok(m.offset + size <= m.buffer.byteLength, 'and ends inside it');
  const seen = new Uint8Array(m.buffer, m.offset, size);
  file[fileOffset] = 0x11;
  file[fileOffset + size - 1] = 0x22;
  file[fileOffset - 1] = 0x33; // before the range: not part of it
  t.same([seen[0], seen[size - 1]], [0x11, 0x22], "the file's first and last bytes of the range, through the buffer");
  seen[1000] = 0x44;
  t.equal(file[fileOffset + 1000], 0x44, 'and a write through the buffer reaches the file');
  const words = new Float64Array(m.buffer, m.offset, size >>> 3);
  t.equal(words.length, size / 8, 'viewed as 64-bit words too');

  const fromWorker = await new Promise<number[]>((resolve, reject) => {
    const worker = new Worker(
      `const { parentPort, workerData } = require('node:worker_threads');
       const v = new Uint8Array(workerData.buffer, workerData.offset, workerData.size);
       v[2000] = 0x55;
       parentPort.postMessage([v[0], v[workerData.size - 1], v[1000]]);`,
      { eval: true, workerData: { buffer: m.buffer, offset: m.offset, size } },
    );
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  t.same(fromWorker, [0x11, 0x22, 0x44], 'a worker given the buffer sees the same bytes');
  t.equal(file[fileOffset + 2000], 0x55, "and writes the file's");

  const mapped = (name: string) => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.includes(`/memfd:${name} `)).length;
  t.equal(mapped('shared-mapping-test'), 2, "the file mapped twice: the frontend's side and the buffer's");
  releaseSharedMapping(m);
  t.equal(mapped('shared-mapping-test'), 1, "released: the buffer's mapping of the file is gone (an access there would fault)");
  releaseSharedMapping(m);
  const other = sys.memfdCreate('shared-mapping-other');
  t.teardown(() => sys.close(other));
  sys.ftruncate(other, size);
  const next = mapIntoSharedBuffer(other, 0, size, sys.fstatBlockSize(other));
  t.equal(next.buffer, m.buffer, 'the next mapping of its size takes the buffer released, rather than more address space');
  const small = mapIntoSharedBuffer(other, 0, PAGE, sys.fstatBlockSize(other));
  t.equal(small.buffer.byteLength, 32 * 2 ** 20, 'a small range takes the smallest buffer, 32 MiB of address space (reserved: nothing committed), which the allocator maps on its own and unmaps whole when it is freed');
  releaseSharedMapping(small);
  const again = mapIntoSharedBuffer(other, 0, size, sys.fstatBlockSize(other));
  t.not(again.buffer, m.buffer, 'released twice, it went back once: another mapping gets another buffer');
  new Uint8Array(next.buffer, next.offset, PAGE)[0] = 0x77;
  t.equal(new Uint8Array(again.buffer, again.offset, PAGE)[0], 0x77, 'both views of the other file');
  releaseSharedMapping(next);
  releaseSharedMapping(again);
});

t.test('a file that cannot be mapped is refused, naming mmap; the next mapping works', async (t) => {
  const socket = sys.eventfd();
  t.teardown(() => sys.close(socket));
  t.throws(() => mapIntoSharedBuffer(socket, 0, PAGE, PAGE), /mmap/, 'an eventfd cannot be mapped: the error names mmap');
  const fd = sys.memfdCreate('shared-mapping-test');
  t.teardown(() => sys.close(fd));
  sys.ftruncate(fd, PAGE);
  const m = mapIntoSharedBuffer(fd, 0, PAGE, sys.fstatBlockSize(fd));
  new Uint8Array(m.buffer, m.offset, PAGE)[PAGE - 1] = 1;
  t.equal(new Uint8Array(sys.view(sys.mmapShared(fd, PAGE), PAGE))[PAGE - 1], 1, 'a memfd mapped next is seen through its buffer');
  releaseSharedMapping(m);
});

t.test("each buffer is a mapping of its own, freed by unmapping it whole; its first and last bytes, which its allocator writes as it frees it, are never reserved nor mapped over", async (t) => {
  const fd = sys.memfdCreate('shared-mapping-ends');
  t.teardown(() => sys.close(fd));
  sys.ftruncate(fd, PAGE);
  // Small ranges, which took small buffers from the allocator's heap: freed, their memory
  // went back to the heap with pages still reserved or mapped over, for the next allocation
  // to fault on.
  const mappings = Array.from({ length: 100 }, () => mapIntoSharedBuffer(fd, 0, PAGE, PAGE));
  t.teardown(() => mappings.forEach((m) => releaseSharedMapping(m)));
  const areas = readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [range, perms, , , , ...path] = l.split(/\s+/);
      const [from, to] = range.split('-').map((x) => parseInt(x, 16));
      return { from, to, perms, file: path.join(' ') };
    });
  const areaOf = (at: number) => areas.find((a) => a.from <= at && at < a.to);
  const taken: string[] = [];
  for (const m of mappings) {
    const start = sys.addressOf(new Uint8Array(m.buffer, 0, 1));
    const end = start + m.buffer.byteLength;
    const first = areaOf(start);
    // Not in the heap (the main thread's allocations, this test's, come from there when small).
    if (first === undefined || first.file === '[heap]') taken.push(`buffer 0x${start.toString(16)}: in ${first === undefined ? 'nothing' : `0x${first.from.toString(16)} ${first.file || 'anonymous'}`}, not a mapping of its own`);
    for (const at of [start, start + 63, end - 64, end - 1]) {
      const area = areaOf(at);
      if (area === undefined || !area.perms.startsWith('rw') || area.file.includes('memfd:')) taken.push(`0x${at.toString(16)} (buffer 0x${start.toString(16)} +${m.buffer.byteLength}): ${area === undefined ? 'unmapped' : `${area.perms} ${area.file}`}`);
    }
  }
  t.same(taken.slice(0, 5), [], "each of 100 buffers its own mapping, its first and last 64 bytes its own memory, readable and writable");
});
