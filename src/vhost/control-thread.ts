// Entry point of the vhost control thread: owns every port's socket and connection and
// speaks the vhost-user protocol; tells the PMDs what to poll. Driven by the event loop
// (libuv polls the sockets), so it never blocks and never touches packets.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pack, unpack } from 'msgpackr';
import { setThreadName } from '../sys/libc.ts';
import { createLog } from '../log.ts';
import { PmdClient, type PmdLink } from './pmd-client.ts';
import { PortEndpoint, type EndpointSettings, type PortState } from './port-endpoint.ts';

export interface ControlThreadData {
  endpoints: EndpointSettings[];
  /** queueOwner[port][queuePair]: the PMD that polls it */
  queueOwner: number[][];
  pmdLinks: PmdLink[];
}

/**
 * Between the supervisor and this thread: msgpackr messages on the worker's parent port;
 * a restarted PMD's command port travels beside its message (a port cannot be encoded).
 */
export type ControlRequest =
  | { t: 'shutdown' }
  /** culprit: the port the PMD was serving when it died of an error, and the error */
  | { t: 'pmd-restarted'; pmd: number; culprit: { port: number; error: string } | null }
  /** each port's connection, for the admin endpoint */
  | { t: 'port-states'; id: number };
export interface ControlEnvelope {
  msg: Uint8Array;
  commands?: MessagePort;
}
export type ControlEvent = { t: 'ready' } | { t: 'fatal'; error: string } | { t: 'stopped' } | { t: 'port-states'; id: number; states: PortState[] };

const { endpoints, queueOwner, pmdLinks } = workerData as ControlThreadData;
const log = createLog('vhost');
setThreadName('vhost-ctl');
const dataplane = new PmdClient(pmdLinks, queueOwner, log);
const ports = endpoints.map((e) => new PortEndpoint(e, dataplane, log));
const send = (event: ControlEvent) => parentPort!.postMessage(pack(event));

try {
  for (const p of ports) p.start();
  send({ t: 'ready' });
} catch (err) {
  send({ t: 'fatal', error: (err as Error).message });
}

parentPort!.on('message', async (envelope: ControlEnvelope) => {
  const req = unpack(envelope.msg) as ControlRequest;
  if (req.t === 'shutdown') {
    await Promise.all(ports.map((p) => p.stop()));
    dataplane.close();
    send({ t: 'stopped' });
  } else if (req.t === 'port-states') {
    send({ t: 'port-states', id: req.id, states: ports.map((p) => p.state()) });
  } else if (req.t === 'pmd-restarted' && envelope.commands) {
    dataplane.replaceLink(req.pmd, envelope.commands);
    log.info(`pmd${req.pmd} restarted: handing its queues back`, 'pmd.queues_returned', { pmd: req.pmd });
    const culprit = req.culprit;
    await Promise.all(ports.map((p, index) => p.resync(req.pmd, culprit !== null && culprit.port === index ? culprit.error : null)));
  }
});
