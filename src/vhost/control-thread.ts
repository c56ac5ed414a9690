// Entry point of the vhost control thread: owns every port's socket and connection and
// speaks the vhost-user protocol; tells the PMDs what to poll. Driven by the event loop
// (libuv polls the sockets), so it never blocks and never touches packets.
import { parentPort, workerData } from 'node:worker_threads';
import { pack, unpack } from '../sys/msgpack.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { setThreadName } from '../sys/libc.ts';
import { monotonicMs } from '../sys/monotonic.ts';
import { createLog } from '../log.ts';
import { FAREWELL, QUEUES_BACK, type PmdCommand } from './dataplane-link.ts';
import type { Topology } from '../pipeline/api.ts';
import { PmdClient } from './pmd-client.ts';
import { PortEndpoint, type EndpointSettings, type PortState } from './port-endpoint.ts';
import { interfaceRefusal, UplinkEndpoint, uplinkKey } from '../uplink/uplink-endpoint.ts';

type Endpoint = PortEndpoint | UplinkEndpoint;
/** How long a stop or a port change waits for the PMDs' last frames (FAREWELL, 'leaving'): a PMD answers between two bursts. */
const FAREWELL_WAIT_MS = 500;
const endpointFor = (e: EndpointSettings): Endpoint => (e.type === 'vhost-user' ? new PortEndpoint(e, dataplane, log) : new UplinkEndpoint(e, dataplane, log));
const keyOf = (e: EndpointSettings) => (e.type === 'vhost-user' ? e.socket : uplinkKey(e));

export interface ControlThreadData {
  endpoints: EndpointSettings[];
  /** queueOwner[port][queuePair]: the PMD that polls it */
  queueOwner: number[][];
}

/** Between the supervisor and this thread: msgpackr messages on the worker's parent port. */
export type ControlRequest =
  /**
   * The first request, once the data plane has started (the thread loads beside it): its
   * command socket (this process's end), and which start of each PMD runs; the ports then
   * listen. A 'shutdown' may come instead (the data plane failed to start).
   */
  | { t: 'begin'; commandsFd: number; incarnations: number[] }
  | { t: 'shutdown' }
  /**
   * Ports added, removed or changed at run time (answered with 'done'): the closing ones'
   * frontends are disconnected, the opening ones listen but take frontends only once the
   * PMDs run on the new layout ('layout'). A TAP port in `retune` gets its new MTU on the
   * interface it has. `next`: the topology of that layout, which the PMDs running are told
   * of before any port closes (Plugin.leaving).
   */
  | { t: 'ports'; id: number; open: EndpointSettings[]; close: number[]; retune: EndpointSettings[]; next: Topology }
  /**
   * the PMDs running are to be replaced on the same topology (an upgrade, plugin files loaded
   * again): they are told first (Plugin.leaving), answered with 'done' once their last
   * frames are out
   */
  | { t: 'leaving'; id: number; next: Topology }
  /**
   * every PMD was started again, on a new layout or (commandsFd) in a new data-plane
   * process: each gets its queues back (answered with 'done')
   */
  | {
      t: 'layout';
      id: number;
      queueOwner: number[][];
      /**
       * the port of each slot the layout has (null: none): a port opened since (a 'ports' whose
       * layout has not come yet: an upgrade's hand-over ran meanwhile) stays held
       */
      slots: (string | null)[];
      incarnations: number[];
      commandsFd?: number;
      /** the data plane died: ports whose memory files shrank, and these (a crash loop), are quarantined first */
      died?: { culprits: { port: number; error: string }[] };
    }
  /** culprit: the port the PMD was serving when it died of an error, and the error */
  | { t: 'pmd-restarted'; pmd: number; incarnation: number; culprit: { port: number; error: string } | null }
  /** each port's connection, for the admin endpoint */
  | { t: 'port-states'; id: number }
  /** a port whose frontend blocked a PMD (see Supervisor.interruptBlockedCall) */
  | { t: 'quarantine'; port: number; why: string };
export interface ControlEnvelope {
  msg: Uint8Array;
}
export type ControlEvent =
  | { t: 'ready' }
  /** a finished log line, for the supervisor to write in its turn among these events */
  | { t: 'log'; line: string }
  | { t: 'fatal'; error: string }
  | { t: 'stopped' }
  /** by slot; null for a free slot */
  | { t: 'port-states'; id: number; states: (PortState | null)[] }
  /**
   * 'layout': resumedAt, when the last PMD took frames again (monotonicMs), if every one
   * said; handedAt, when the last command of the hand-over was sent
   */
  | { t: 'done'; id: number; error?: string; resumedAt?: number; handedAt?: number };

const { endpoints, queueOwner } = workerData as ControlThreadData;
const send = (event: ControlEvent) => parentPort!.postMessage(pack(event));
// Through the port its other events take, not this thread's stderr (which the main thread
// writes when it next turns to it): each port's line is written before "ready".
const log = createLog('vhost', (line) => send({ t: 'log', line }));
setThreadName('vhost-ctl');
const begin = await firstRequest();
if (begin.t === 'shutdown') {
  // Nothing listens yet, and no command socket was given. Posted before the thread ends, it arrives.
  send({ t: 'stopped' });
  process.exit(0);
}
const dataplane = new PmdClient(begin.commandsFd, queueOwner, begin.incarnations, log);
/** by slot; null for a free slot, and for a VLAN port (its parent's endpoint carries its frames) */
const ports: (Endpoint | null)[] = [];
for (const e of endpoints) {
  while (ports.length < e.index) ports.push(null);
  ports[e.index] = endpointFor(e);
}
const live = () => ports.filter((p): p is Endpoint => p !== null);

const started: Endpoint[] = [];
try {
  for (const p of live()) {
    p.start();
    started.push(p);
  }
  send({ t: 'ready' });
} catch (err) {
  // Those already listening close, and remove their sockets: vrouter does not start. The
  // command socket's watch goes too: its hang-up, as the data plane is killed, would call
  // into this thread while it is terminated, which koffi turns into a fatal error.
  await Promise.allSettled(started.map((p) => p.stop()));
  dataplane.close();
  send({ t: 'fatal', error: (err as Error).message });
}

parentPort!.on('message', async (envelope: ControlEnvelope) => {
  const req = unpack(envelope.msg) as ControlRequest;
  if (req.t === 'shutdown') {
    await lastFrames(FAREWELL);
    await Promise.all(live().map((p) => p.stop()));
    dataplane.close();
    send({ t: 'stopped' });
  } else if (req.t === 'quarantine') {
    await ports[req.port]?.quarantine(req.why);
  } else if (req.t === 'port-states') {
    send({ t: 'port-states', id: req.id, states: ports.map((p) => p?.state() ?? null) });
  } else if (req.t === 'pmd-restarted') {
    dataplane.replaceLink(req.pmd, req.incarnation);
    log.info(`pmd${req.pmd} restarted: handing its queues back`, 'pmd.queues_returned', { pmd: req.pmd });
    const culprit = req.culprit;
    await handBack([req.pmd], ports, (_, index) => (culprit !== null && culprit.port === index ? culprit.error : null));
  } else if (req.t === 'leaving') {
    await lastFrames({ t: 'leaving', port: -1, gen: 0, next: req.next });
    send({ t: 'done', id: req.id });
  } else if (req.t === 'ports') {
    const error = await changePorts(req.open, req.close, req.retune, req.next);
    send({ t: 'done', id: req.id, ...(error === null ? {} : { error }) });
  } else if (req.t === 'layout') {
    if (req.died) await quarantineCulprits(req.died.culprits);
    dataplane.replaceAll(req.incarnations, req.queueOwner, req.commandsFd);
    const laidOut = ports.map((p, slot) => (p !== null && req.slots[slot] === p.name ? p : null));
    for (const p of laidOut) p?.release();
    // Every PMD (one incarnation each; queueOwner is by port, not by PMD).
    const { resumedAt, handedAt } = await handBack(req.incarnations.map((_, pmd) => pmd), laidOut, () => null);
    send({ t: 'done', id: req.id, resumedAt, handedAt });
  }
});

/**
 * 'begin', or 'shutdown' if the data plane failed to start. What comes before either is
 * about a data plane that never started (its death at start), and the start fails: dropped.
 */
function firstRequest(): Promise<Extract<ControlRequest, { t: 'begin' | 'shutdown' }>> {
  return new Promise((resolve) => {
    const take = (envelope: ControlEnvelope) => {
      const req = unpack(envelope.msg) as ControlRequest;
      if (req.t !== 'begin' && req.t !== 'shutdown') return;
      parentPort!.off('message', take);
      resolve(req);
    };
    parentPort!.on('message', take);
  });
}

/**
 * The stages' last frames (final router advertisements) while the ports are connected, not
 * waited for longer than PMDs take to answer between their poll rounds. Twice: each answers
 * after a poll round, so that the second round has delivered what one PMD handed another in
 * the first (a port whose queue another PMD holds).
 */
async function lastFrames(cmd: typeof FAREWELL | Extract<PmdCommand, { t: 'leaving' }>): Promise<void> {
  const rounds = async () => {
    for (let round = 0; round < 2; round++) await Promise.all(dataplane.pmds().map((pmd) => dataplane.requestOn(pmd, cmd)));
  };
  await Promise.race([rounds(), sleep(FAREWELL_WAIT_MS)]);
}

/**
 * Every port's queues on `pmds` handed back (resync), then the PMDs told they are all back
 * (QUEUES_BACK): sent as soon as every port's commands are (a vhost port says so before
 * their answers; the others once their hand-over ends), carried out by each PMD once it has
 * them all in use. `culprit`: why a port is not handed back but quarantined, or null.
 * Resolves to when the last of the PMDs took frames again, if each said, and when the last
 * command was sent (monotonicMs).
 */
async function handBack(pmds: number[], endpoints: readonly (Endpoint | null)[], culprit: (p: Endpoint, index: number) => string | null): Promise<{ resumedAt?: number; handedAt: number }> {
  const sent: Promise<void>[] = [];
  const done: Promise<void>[] = [];
  endpoints.forEach((p, index) => {
    if (p === null) return;
    for (const pmd of pmds) {
      sent.push(
        new Promise((told) => {
          const resynced = p.resync(pmd, culprit(p, index), told);
          done.push(resynced);
          // Told at the latest when it ends, whichever way (a closed connection sends nothing).
          resynced.then(told, told);
        }),
      );
    }
  });
  await Promise.all(sent);
  const queuesBack = Promise.all(pmds.map((pmd) => dataplane.requestOn(pmd, QUEUES_BACK)));
  const handedAt = monotonicMs();
  const [, backs] = await Promise.all([Promise.all(done), queuesBack]);
  const resumedAt = backs.length > 0 && backs.every((b) => b.resumedAt !== undefined) ? Math.max(...backs.map((b) => b.resumedAt!)) : undefined;
  return { resumedAt, handedAt };
}

/**
 * After the data plane died: a frontend whose memory file shrank (a SIGBUS in the data
 * plane) is found by its files' sizes and quarantined, as are the ports the supervisor
 * blames for a crash loop; the others get their queues back.
 */
async function quarantineCulprits(culprits: { port: number; error: string }[]): Promise<void> {
  for (const p of live()) {
    const problem = await p.auditMemory();
    if (problem !== null) log.error(`port ${p.name}: its frontend shrank its guest memory under the data plane (${problem}): the likely cause of the data plane's death`, 'dataplane.culprit', { port: p.name });
  }
  for (const c of culprits) await ports[c.port]?.quarantine(c.error);
}

/**
 * Opens and closes endpoints for a port change. New sockets are made first, then TAP
 * interfaces get their new MTU: if one of these cannot be, what was done is undone and
 * nothing changed. Then the PMDs running are told of the topology `next` (their stages
 * send what the ports that change are owed, while every port is connected), the closing
 * ports disconnect and free their sockets, which a changed port may take again. Returns
 * the error, or null.
 */
async function changePorts(open: EndpointSettings[], close: number[], retune: EndpointSettings[], next: Topology): Promise<string | null> {
  const freed = new Set(close.map((slot) => ports[slot]?.key));
  // A changed port reopens after its old endpoint closed: an interface it would be refused
  // on is found first, while nothing has changed.
  for (const e of open) {
    const refusal = freed.has(keyOf(e)) ? interfaceRefusal(e) : null;
    if (refusal !== null) return `port ${e.name}: cannot open ${describe(e)}: ${refusal}`;
  }
  const first = open.filter((e) => !freed.has(keyOf(e)));
  const started: Endpoint[] = [];
  try {
    for (const e of first) {
      const endpoint = endpointFor(e);
      endpoint.start(true);
      started.push(endpoint);
    }
  } catch (err) {
    await Promise.all(started.map((p) => p.stop()));
    return `port ${first[started.length].name}: cannot open ${describe(first[started.length])}: ${(err as Error).message}`;
  }
  const retuned: { endpoint: UplinkEndpoint; before: EndpointSettings }[] = [];
  for (const e of retune) {
    const endpoint = ports[e.index];
    if (!(endpoint instanceof UplinkEndpoint)) continue;
    const before = endpoint.currentSettings;
    try {
      endpoint.changeMtu(e);
      retuned.push({ endpoint, before });
    } catch (err) {
      for (const r of retuned.reverse()) {
        try {
          r.endpoint.changeMtu(r.before);
        } catch (undo) {
          log.error(`port ${r.before.name}: cannot set MTU ${r.before.mtu} back on ${describe(r.before)}: ${(undo as Error).message}`, 'port.failed', { port: r.before.name });
        }
      }
      await Promise.all(started.map((p) => p.stop()));
      return `port ${e.name}: cannot set MTU ${e.mtu} on ${describe(e)}: ${(err as Error).message}`;
    }
  }
  // Nothing is refused from here on.
  await lastFrames({ t: 'leaving', port: -1, gen: 0, next });
  await Promise.all(close.map((slot) => ports[slot]?.stop()));
  for (const slot of close) {
    log.info(`port ${ports[slot]?.name}: closed (removed or changed)`, 'port.closed', { port: ports[slot]?.name });
    ports[slot] = null;
  }
  first.forEach((e, i) => (ports[e.index] = started[i]));
  for (const e of open.filter((o) => freed.has(keyOf(o)))) {
    const endpoint = endpointFor(e);
    try {
      endpoint.start(true);
      ports[e.index] = endpoint;
    } catch (err) {
      log.error(`port ${e.name}: cannot open ${describe(e)} again: ${(err as Error).message}`, 'port.failed', { port: e.name });
    }
  }
  return null;
}

function describe(e: EndpointSettings): string {
  if (e.type === 'vhost-user') return `socket ${e.socket}`;
  return e.type === 'tap' ? `TAP interface ${e.interface}` : `interface ${e.interface}`;
}
