// The data-plane process (`vrouter-dataplane`): started by the supervisor, it maps the
// shared memory and the guests' memory, and runs one PMD thread per core. Everything that
// must outlive it stays with the supervisor: the connections and their fds, the vring
// positions, the tables and counters (in the shared memory it maps). This main thread only
// relays: the supervisor's orders to the PMDs, the control thread's commands with the fds
// they carry, and the answers back.
import { MessageChannel, Worker } from 'node:worker_threads';
import { pack, unpack } from '../sys/msgpack.ts';
import { createLog } from '../log.ts';
import { PacketChannel } from '../sys/packet-channel.ts';
import { closeAll, eventfd, eventfdSignal, fstatBlockSize, fstatSize, installInterruptHandler, mmapShared, munmap, setParentDeathSignal, setThreadName, setThreadNice, startOnCpus, SysError } from '../sys/libc.ts';
import { mmapXdpRing, xdpRingBytes, XDP_RINGS } from '../sys/xdp.ts';
import { arenaAddress, attachArena, decodeShared, regionOf, type SharedRef } from '../sys/shared-arena.ts';
import { holdLifeLock } from '../sys/life-locks.ts';
import { forEachThread, keepThreadsToCpus, setV8WorkersNice } from '../sys/process-threads.ts';
import { DOORBELL_COMMANDS, DOORBELL_SLEEPING, DOORBELL_TABLES, type InflightArea, type XdpMappings, type PmdCommand, type PmdReply } from '../vhost/dataplane-link.ts';
import { mapRegionWindows, type MemoryRegion } from '../virtio/guest-memory.ts';
import { releaseSharedMapping, type SharedMapping } from '../sys/shared-mapping.ts';
import type { PmdLogLine, PmdStandbyLine, PmdThreadData } from '../pipeline/pmd-thread.ts';
import { COMMANDS_FD, SUPERVISOR_FD, type CommandMessage, type DataplaneEvent, type RegionOnWire, type PmdSpawnData, type SupervisorMessage, type WireCommand } from './process-link.ts';
import { COUNTER_LAYOUT } from './counters.ts';

const MODULE_EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const log = createLog('dataplane');
/** ps shows a spare as such until its PMDs go. */
const named = (spare: boolean) => {
  process.title = spare ? 'vrouter-dataplane-spare' : 'vrouter-dataplane';
  setThreadName(spare ? 'vrouter-spare' : 'vrouter-datapl');
};
const startedAsSpare = process.argv.includes('--spare');
named(startedAsSpare);
// A supervisor that dies takes its data plane with it: nothing else would stop the PMDs.
setParentDeathSignal('SIGKILL');
// The supervisor ends this process (SIGKILL), and answers the signals an operator sends
// vrouter. Those that reach the whole process group or cgroup (Ctrl-C, a terminal that
// hangs up, systemd's stop, `pkill vrouter`, which matches this process's name) would end
// the data plane first, under the guests, before the supervisor's orderly stop or reload.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'] as const) process.on(signal, () => undefined);
// Before any PMD: a PMD blocked writing a guest's call eventfd can then be interrupted.
try {
  installInterruptHandler();
} catch (err) {
  log.warn(`a PMD blocked in a write to a guest's eventfd cannot be interrupted, only killed with the process: ${(err as Error).message}`);
}
// Loading (a spare's, an upgrade's: modules, plugins, their compilation) is bulk work, at 0
// on every thread whatever the supervisor's nice. Serving queues, or loaded as a spare, the
// main thread takes control.nice: it relays every hand-over (raised from the spare's load
// on rather than from the go, a death's hand-over took 33 to 48 ms instead of 43 to 70, in
// the e2e test). Its other threads stay at 0: with all of them raised, an upgrade left the
// pauses benchmark's counters standing still for up to 430 ms (its generator shares the
// CPU; most likely starved while V8 compiled the new code). V8's workers are raised for
// the hand-over alone (raiseV8Workers). A spare's PMDs raise themselves
// only while they wait for the go and take the queues over (pmd-thread.ts).
// A positive nice is kept (raising it back needs a privilege): not worth a word.
forEachThread((tid) => setThreadNice(0, tid));
let servingNice = 0;
/** where this process's threads but the PMDs go once it has loaded (init's controlCpus) */
let controlCpus: number[] | null = null;
/** the main thread is at servingNice: set once (a spare's PMDs each report they loaded, then the go comes) */
let serving = false;
/** this process's life locks, for its PMD threads */
let lifeLocks: SharedRef | null = null;
function serveQueues(): void {
  if (serving) return;
  serving = true;
  try {
    setThreadNice(servingNice);
  } catch (err) {
    log.warn(`main thread not at nice ${servingNice} (control.nice): ${(err as Error).message}`);
  }
  if (controlCpus !== null) keepToControlCpus(controlCpus);
}

/**
 * From the go until every PMD that went takes frames again, V8's workers are at the main
 * thread's nice (setV8WorkersNice says why); at most V8_WORKERS_RAISED_AT_MOST_MS.
 */
const V8_WORKERS_RAISED_AT_MOST_MS = 2000;
/** the PMDs told to go that have not yet taken their queues back */
const goneWithoutQueues = new Set<number>();
let v8WorkersLowered: NodeJS.Timeout | null = null;
const warnV8Workers = (message: string): void => log.warn(message);
function raiseV8Workers(pmdIds: Iterable<number>): void {
  if (servingNice >= 0) return;
  for (const id of pmdIds) goneWithoutQueues.add(id);
  setV8WorkersNice(servingNice, warnV8Workers);
  v8WorkersLowered ??= setTimeout(lowerV8Workers, V8_WORKERS_RAISED_AT_MOST_MS);
}
function lowerV8Workers(): void {
  goneWithoutQueues.clear();
  if (v8WorkersLowered === null) return;
  clearTimeout(v8WorkersLowered);
  v8WorkersLowered = null;
  setV8WorkersNice(0, warnV8Workers);
}

/**
 * A spare started with vrouter loads on every CPU, the PMDs' too (none polls yet): once
 * loaded, its threads but its PMDs (named pmdN; each pins itself when it goes) keep to the
 * control CPUs, where a process started from the supervisor's threads is born. Threads
 * started from then on are born there.
 */
function keepToControlCpus(cpus: number[]): void {
  for (const failure of keepThreadsToCpus(cpus, /^pmd\d+$/)) log.warn(`not kept to CPU ${cpus.join(', ')}: ${failure}`);
}

interface RunningPmd {
  id: number;
  incarnation: number;
  worker: Worker;
  commands: MessageChannel['port1'];
  doorbell: Int32Array;
  /** kick and call fds it was given, by `${port}/${vring}/${kind}`: closed when replaced or the port reset */
  fds: Map<string, number>;
  /** commands sent, waiting for their answer: the fds to close then */
  pending: Map<number, { cmd: WireCommand; fds: Map<string, number> }>;
  /** called when the PMD answers 'quiesce' (id 0) */
  quiesced?: () => void;
}

const pmds = new Map<number, RunningPmd>();
/** the go words of PMDs in standby (a spare, an upgrade), by PMD: set by 'go' */
const standby = new Map<number, Int32Array>();
const wakeFds: number[] = [];
/** By id: each mapping of an inflight record's file (`skip`: where its region starts in it), a socket's packet rings, an AF_XDP UMEM and rings. */
const mapped = new Map<number, { addr: bigint; length: number; skip?: number }>();
/** By region id: guest memory, each window of it inside a SharedArrayBuffer (mapRegionWindows). */
const guestRegions = new Map<number, SharedMapping[]>();

/**
 * The supervisor is gone: so is this process, at once and whole. Not process.exit(): it
 * stops the PMD threads first, and one stopped while it declares koffi's functions aborts
 * the process (koffi cannot throw into a thread being stopped); nothing here needs a clean end.
 */
const supervisorGone = () => process.kill(process.pid, 'SIGKILL');
const supervisor = new PacketChannel(SUPERVISOR_FD, { message: (m, fds) => onSupervisor(m as SupervisorMessage, fds), closed: supervisorGone });
const commands = new PacketChannel(COMMANDS_FD, { message: (m, fds) => onCommand(m as CommandMessage, fds), closed: () => undefined });
const tell = (event: DataplaneEvent) => supervisor.send(event);

function onSupervisor(m: SupervisorMessage, fds: number[]): void {
  if (m.t === 'init') {
    // Code of another vrouter (files replaced on disk since the supervisor started): its
    // PMDs would count where the supervisor reads other counters, or past its blocks.
    if (m.counterLayout !== COUNTER_LAYOUT) {
      tell({ t: 'refused', reason: 'its code counts in another layout than the running supervisor reads (drop reasons or counters added or removed since vrouter started): restart vrouter to run it' });
      return;
    }
    attachArena(fds[0], m.arenaBytes);
    // The first life lock, held by this thread until the process ends: the supervisor
    // waits for it (and then the PMDs') to know the process dead (life-locks.ts).
    if (holdLifeLock(regionOf(m.lifeLocks), 0, 1) !== 0) throw new Error('the life lock of the main thread is taken');
    lifeLocks = m.lifeLocks;
    servingNice = m.nice;
    controlCpus = m.controlCpus;
    // Started to serve at once (not a spare): its PMDs, spawned next, go back to 0 themselves.
    if (!startedAsSpare) serveQueues();
    tell({ t: 'ready' });
  } else if (m.t === 'spawn') {
    spawn(m.pmd, m.incarnation, m.data, m.standby);
  } else if (m.t === 'go') {
    serveQueues();
    raiseV8Workers(standby.keys());
    for (const [id, word] of standby) {
      const pmd = pmds.get(id);
      if (pmd === undefined) continue;
      pmd.worker.postMessage(withWakeFds(m.data[id]));
      Atomics.store(word, 0, 1);
      Atomics.notify(word, 0);
    }
    standby.clear();
    named(false);
  } else if (m.t === 'quiesce') {
    void quiesce();
  } else if (m.t === 'terminate') {
    const pmd = pmds.get(m.pmd);
    if (pmd?.incarnation === m.incarnation) void pmd.worker.terminate();
  } else if (m.t === 'tables') {
    for (const [id, pmd] of pmds) {
      // A PMD in standby takes the tables with its go, as they are then: this message would
      // be the first it reads, taken for the go itself.
      if (standby.has(id)) continue;
      pmd.worker.postMessage(m.update);
      ring(pmd, DOORBELL_TABLES);
    }
  }
}

/** The data with this process's wake eventfds in it (every PMD's, to wake its peers). */
function withWakeFds(data: PmdSpawnData): PmdSpawnData {
  const wakers = data.shared.wakers;
  for (let i = wakeFds.length; i < wakers.length; i++) wakeFds.push(eventfd());
  wakers.forEach((w, i) => (w.wakeFd = wakeFds[i]));
  return data;
}

function spawn(id: number, incarnation: number, spawned: PmdSpawnData, waits: boolean): void {
  const data = withWakeFds(spawned);
  const wakers = data.shared.wakers;
  const channel = new MessageChannel();
  const go = waits ? new SharedArrayBuffer(8) : null;
  if (go !== null) standby.set(id, new Int32Array(go));
  const threadData: PmdThreadData = { ...data, commands: channel.port2, arena: arenaAddress(), standby: go, lifeLocks, handOverNice: servingNice };
  const start = () => new Worker(new URL(`../pipeline/pmd-thread${MODULE_EXT}`, import.meta.url), { workerData: threadData, transferList: [channel.port2], name: `pmd${id}` });
  // At the daemon's first start the PMD's CPU is idle: the thread starts there and loads its
  // modules and plugins beside the control thread's loading, not on the control CPUs. One
  // that takes over queues (a restart, a spare, an upgrade) loads off a CPU that another PMD
  // may still poll; pmd-thread.ts pins it once loaded.
  const worker = !waits && !data.waitForQueues ? startOnCpus([data.config.cpu], start) : start();
  const doorbell = new Int32Array(decodeShared(wakers[id].doorbell));
  const pmd: RunningPmd = { id, incarnation, worker, commands: channel.port1, doorbell, fds: new Map(), pending: new Map() };
  pmds.set(id, pmd);
  channel.port1.on('message', (bytes: Uint8Array) => answered(pmd, unpack(bytes) as PmdReply));
  worker.on('message', (m: PmdLogLine | PmdStandbyLine) => {
    if ('standby' in m) {
      // Loaded: the next hand-over goes through this thread (the go, then the commands). Its
      // threads are where they serve from before the supervisor hears it.
      if (m.refused === null) serveQueues();
      tell({ t: 'pmd-standby', pmd: id, incarnation, refused: m.refused });
    }
    else process.stderr.write(m.log);
  });
  worker.on('error', (err) => tell({ t: 'pmd-error', pmd: id, incarnation, error: err.stack ?? err.message }));
  worker.on('exit', (code) => {
    if (pmds.get(id) === pmd) pmds.delete(id);
    channel.port1.close();
    // A dead thread holds nothing: its fds go, and its waiting commands are answered.
    for (const [cmdId, p] of pmd.pending) {
      closeAll(p.fds.values());
      commands.send({ t: 'reply', reply: { id: cmdId, error: `PMD ${id} restarted`, restarted: true } });
    }
    closeAll(pmd.fds.values());
    tell({ t: 'pmd-exit', pmd: id, incarnation, code });
  });
}

/**
 * Stops every PMD between two bursts, so that no frame is half done (an upgrade): each
 * answers the command, then waits for good; the process is killed next.
 */
async function quiesce(): Promise<void> {
  await Promise.all(
    [...pmds.values()].map(
      (pmd) =>
        new Promise<void>((resolve) => {
          pmd.worker.once('exit', () => resolve());
          pmd.quiesced = resolve;
          pmd.commands.postMessage(pack({ id: 0, cmd: { t: 'quiesce' } }));
          ring(pmd, DOORBELL_COMMANDS);
        }),
    ),
  );
  tell({ t: 'quiesced' });
}

/** Makes a PMD look at a doorbell word, waking it if it sleeps. */
function ring(pmd: RunningPmd, word: number): void {
  Atomics.add(pmd.doorbell, word, 1);
  if (Atomics.load(pmd.doorbell, DOORBELL_SLEEPING) === 1) eventfdSignal(wakeFds[pmd.id]);
}

function onCommand(m: CommandMessage, fds: number[]): void {
  if (m.t === 'unmap') {
    for (const id of m.ids) {
      const guest = guestRegions.get(id);
      if (guest !== undefined) {
        guestRegions.delete(id);
        guest.forEach(releaseSharedMapping);
        continue;
      }
      const region = mapped.get(id);
      if (region === undefined) continue;
      mapped.delete(id);
      munmap(region.addr, region.length);
    }
    closeAll(fds);
    return;
  }
  const pmd = pmds.get(m.pmd);
  const refuse = (error: string, restarted?: true) => commands.send({ t: 'reply', reply: { id: m.id, error, restarted } });
  if (pmd === undefined || pmd.incarnation !== m.incarnation) {
    closeAll(fds);
    return refuse(`PMD ${m.pmd} restarted`, true);
  }
  let cmd: PmdCommand;
  const given = new Map<string, number>();
  try {
    // It closes the fds it does not hand on, whether it returns or throws.
    cmd = localCommand(m.cmd, fds, given);
  } catch (err) {
    return refuse((err as Error).message);
  }
  pmd.pending.set(m.id, { cmd: m.cmd, fds: given });
  // A memory table carries SharedArrayBuffers, which msgpack would copy: cloned, they are shared.
  pmd.commands.postMessage(cmd.t === 'memory' ? { id: m.id, cmd } : pack({ id: m.id, cmd }));
  ring(pmd, DOORBELL_COMMANDS);
}

/**
 * The command with this process's fds and addresses: kick and call fds as received, guest
 * memory mapped (each region once, checked against its file's size first: a region past
 * the end of its file would fault on first touch). Region fds are closed once mapped.
 */
function localCommand(cmd: WireCommand, fds: number[], given: Map<string, number>): PmdCommand {
  const fdAt = (i: number) => (i >= 0 && i < fds.length ? fds[i] : -1);
  if (cmd.t === 'memory') {
    try {
      return { ...cmd, regions: cmd.regions.map((r) => mapGuestRegion(r, fdAt(r.fd))) };
    } finally {
      closeAll(fds);
    }
  }
  let inflight: InflightArea | null = null;
  let xdp: XdpMappings | null = null;
  try {
    if (cmd.t === 'xdp-start') xdp = mapXdp(cmd, fdAt(cmd.fd), fdAt(cmd.umemFd));
    if (cmd.t === 'vring-start' && cmd.inflight !== null) {
      const { region, offset, bytes } = cmd.inflight;
      if (offset + bytes > region.size) throw new Error(`inflight area ${offset} +${bytes} is outside its file's ${region.size} bytes`);
      inflight = { hostAddr: (BigInt(mapRegion(region, fdAt(region.fd)).hostAddr) + BigInt(offset)).toString(), bytes };
    }
  } catch (err) {
    closeAll(fds);
    throw err;
  }
  if (cmd.t === 'vring-start' || cmd.t === 'vring-kick') given.set(`${cmd.port}/${cmd.vring}/kick`, fdAt(cmd.kickFd));
  if (cmd.t === 'vring-start' || cmd.t === 'vring-call') given.set(`${cmd.port}/${cmd.vring}/call`, fdAt(cmd.callFd));
  if (cmd.t === 'tap-start' || cmd.t === 'rings-start' || cmd.t === 'xdp-start') given.set(`${cmd.port}/uplink/${cmd.queue}`, fdAt(cmd.fd));
  const used = new Set(given.values());
  closeAll(fds.filter((fd) => !used.has(fd)));
  if (cmd.t === 'vring-start') return { ...cmd, kickFd: fdAt(cmd.kickFd), callFd: fdAt(cmd.callFd), inflight };
  if (cmd.t === 'vring-kick') return { ...cmd, kickFd: fdAt(cmd.kickFd) };
  if (cmd.t === 'vring-call') return { ...cmd, callFd: fdAt(cmd.callFd) };
  if (cmd.t === 'tap-start') return { ...cmd, fd: fdAt(cmd.fd) };
  if (cmd.t === 'xdp-start') return { ...cmd, fd: fdAt(cmd.fd), umemFd: -1, maps: xdp! };
  if (cmd.t === 'rings-start') {
    const fd = fdAt(cmd.fd);
    let ring = mapped.get(cmd.ring.id);
    if (ring === undefined) {
      // A socket's rings: mmap gives the kernel's buffer (fstat says nothing of its size).
      try {
        ring = { addr: mmapShared(fd, cmd.ring.bytes), length: cmd.ring.bytes };
      } catch (err) {
        given.clear();
        closeAll([fd]);
        throw err;
      }
      mapped.set(cmd.ring.id, ring);
    }
    return { ...cmd, fd, ring: { ...cmd.ring, hostAddr: ring.addr.toString() } };
  }
  return cmd;
}

/**
 * An AF_XDP socket's UMEM (its memfd, checked against its size first: a mapping past the
 * end of the file would fault on first touch) and its four rings, each mapped once.
 */
function mapXdp(cmd: Extract<WireCommand, { t: 'xdp-start' }>, socket: number, umemFd: number): XdpMappings {
  const once = (id: number, map: () => { addr: bigint; length: number }) => {
    let m = mapped.get(id);
    if (m === undefined) {
      m = map();
      mapped.set(id, m);
    }
    return { id, hostAddr: m.addr.toString() };
  };
  const length = cmd.layout.umemBytes;
  const umem = once(cmd.maps.umem.id, () => {
    if (umemFd < 0) throw new Error(`AF_XDP UMEM ${cmd.maps.umem.id} came without its fd`);
    const fileSize = fstatSize(umemFd);
    if (fileSize < length) throw new SysError('mmap', 22, `AF_XDP UMEM needs ${length} bytes of a file of ${fileSize}`);
    return { addr: mmapShared(umemFd, length), length };
  });
  if (socket < 0) throw new Error('xdp-start without its socket');
  const rings = Object.fromEntries(
    XDP_RINGS.map((ring) => {
      const bytes = xdpRingBytes(cmd.layout, ring);
      return [ring, once(cmd.maps[ring].id, () => ({ addr: mmapXdpRing(socket, ring, bytes), length: bytes }))];
    }),
  );
  return { umem, ...rings } as XdpMappings;
}

/** A region's file, checked to hold it (past the end of its file, a mapping faults on first touch). */
function checkRegionFile(r: RegionOnWire, fd: number): void {
  if (fd < 0) throw new Error(`memory region ${r.id} came without its fd`);
  const fileSize = fstatSize(fd);
  if (fileSize < r.mmapOffset + r.size) throw new SysError('mmap', 22, `region ${r.id} needs ${r.mmapOffset + r.size} bytes of a file of ${fileSize}`);
}

/** Guest memory, for the PMDs to view: each window mapped into a SharedArrayBuffer (shared-mapping.ts). */
function mapGuestRegion(r: RegionOnWire, fd: number): MemoryRegion {
  let windows = guestRegions.get(r.id);
  if (windows === undefined) {
    checkRegionFile(r, fd);
    windows = mapRegionWindows(fd, r.mmapOffset, r.size, fstatBlockSize(fd));
    guestRegions.set(r.id, windows);
  }
  return { guestPhysAddr: r.guestPhysAddr, userAddr: r.userAddr, size: r.size, windows };
}

/** A file mapped whole (an inflight record's), for a PMD to view at its address. */
function mapRegion(r: RegionOnWire, fd: number): { hostAddr: string } {
  let region = mapped.get(r.id);
  if (region === undefined) {
    checkRegionFile(r, fd);
    // From the page the region starts in, not from the file's start: a region at an offset
    // of terabytes would otherwise take terabytes of this process's address space.
    const page = fstatBlockSize(fd);
    const start = page > 0 && (page & (page - 1)) === 0 ? r.mmapOffset - (r.mmapOffset % page) : 0;
    const length = r.mmapOffset + r.size - start;
    region = { addr: mmapShared(fd, length, false, start), length, skip: r.mmapOffset - start };
    mapped.set(r.id, region);
  }
  return { hostAddr: (region.addr + BigInt(region.skip ?? 0)).toString() };
}

/** A PMD answered: the fds its command replaced, or those of a refused command, are closed. */
function answered(pmd: RunningPmd, reply: PmdReply): void {
  if (reply.id === 0) {
    pmd.quiesced?.();
    return;
  }
  const sent = pmd.pending.get(reply.id);
  if (sent !== undefined) {
    pmd.pending.delete(reply.id);
    if (sent.cmd.t === 'queues-back' && goneWithoutQueues.delete(pmd.id) && goneWithoutQueues.size === 0) lowerV8Workers();
    if (reply.error !== undefined) {
      closeAll(sent.fds.values());
    } else {
      if (sent.cmd.t === 'port-reset') {
        for (const [key, fd] of pmd.fds) if (key.startsWith(`${sent.cmd.port}/`)) (closeAll([fd]), pmd.fds.delete(key));
      }
      for (const [key, fd] of sent.fds) {
        const old = pmd.fds.get(key);
        if (old !== undefined && old !== fd) closeAll([old]);
        pmd.fds.set(key, fd);
      }
    }
  }
  commands.send({ t: 'reply', reply });
}

process.on('uncaughtException', (err) => {
  log.error(`data plane failed: ${err.stack ?? err.message}`);
  process.exit(70);
});
