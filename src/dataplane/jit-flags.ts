// V8 flags for the data-plane process. Inlining limits: the functions a PMD runs per burst
// (receiveBurst, deliverBurst, writeMergeable, the stages' process) call small helpers per
// frame (the descriptor walk, the copies, the virtio-net header), and each of them is over
// V8's default budgets: a callee of at most 460 bytes of bytecode, 920 in all inlined into
// one function. Past them the helpers stay calls in the per-frame loop. Raised to 1,000
// and 2,000, the whole PMD took 8-10 % less time a frame (bench/micro/pmd.ts, 64 B, bridged,
// routed and full alike); to 2,000 and 6,000, another 3-4 %, and in the real PMD (its
// loop compiled whole, src/pipeline/pmd-thread.ts) the routed rate 20 % more than with
// 1,000 and 2,000. Larger budgets were no better: inlining is a heuristic, measure the real
// PMD again (perf on its thread) when the burst loops change. The price is larger
// optimised code, compiled once per PMD thread.
//
// External memory counted in the heap's global limit: a view of shared state (the arena's
// tables, some of them tens of MB, which V8 counts as external memory: koffi's views are
// external buffers) otherwise forces a full, atomic garbage collection of the PMD's heap at
// once; counted in the global limit, the collection comes later, incremental, as for any
// other growth. Guest memory is viewed through SharedArrayBuffers, which no isolate counts
// (src/sys/shared-mapping.ts).
export const DATAPLANE_V8_FLAGS: readonly string[] = [
  '--external-memory-accounted-in-global-limit',
  '--max-inlined-bytecode-size=2000',
  '--max-inlined-bytecode-size-cumulative=6000',
];

// A spare compiles all its code as it loads (--no-lazy), not function by function as each
// first runs: after the go, its PMDs build their stages and take the queues over in code
// that has never run, while forwarding waits, on CPUs other work keeps busy. With four busy
// loops at nice 0 on the two CPUs, an upgrade's pause from the control thread's last command
// to the new PMDs' first burst fell from medians of 34 to 39 ms (five runs of 16 to 20
// upgrades) to 23 to 35 (four runs of 20), and none of 80 paused over 100 ms (3 of 96 did).
// The price is paid while the old data plane still forwards: about 100 ms more to load, 4.6
// MiB more resident. A data plane started cold (no spare) stays lazy: there the whole load
// is in the pause, and eager compilation made it about 80 ms longer.
//
// Its heaps start with room for 64 MiB of old generation: loaded eagerly, a PMD holds about
// 13 MiB, just under V8's first limit, and the work about the go (stages built, queues
// taken over) crossed it: a full collection began, and finished 23 to 77 ms atomic, in
// the pause or just after it (in each of 8 upgrades traced with --trace-gc, guest memory
// viewed either way; in none of 12 with the room). The room costs nothing until it is
// used, and a PMD allocates little once it polls.
export const SPARE_V8_FLAGS: readonly string[] = ['--no-lazy', '--initial-old-space-size=64'];
