// The hostile-frontend suite's common ground: a daemon with two well-behaved ports (a, b)
// whose traffic must keep flowing, and hostile ports the cases attack; after each case the
// daemon must be alive, a and b must still forward, and nothing may be left behind.
import * as sys from '../../src/sys/libc.ts';
import { FLAG_NEED_REPLY, Req, VERSION } from '../../src/vhost/protocol.ts';
import { memTablePayload, PROTOCOL_MQ_REPLY_ACK_STATUS, startDevice, u32pair, u64, VhostFrontend, vringAddrPayload, type VirtioNetDevice } from '../support/vhost-frontend.ts';
import { DriverQueue, GuestRam } from '../support/virtio-driver.ts';
import { blockingEventfd, pipe } from '../support/raw-fds.ts';
import { processResources, trafficFlows, type ProcessResources } from '../support/traffic.ts';
import { startVrouter, type StartedVrouter } from '../support/vrouter-process.ts';

export const MAC_A = '52:54:00:00:00:0a';
export const MAC_B = '52:54:00:00:00:0b';

export interface Neighbours {
  vr: StartedVrouter;
  a: VirtioNetDevice;
  b: VirtioNetDevice;
  /** what the daemon held with a and b connected: hostile connections must give it all back */
  baseline: ProcessResources;
  /** frames a -> b and back: both must all arrive */
  stillForward(frames?: number): Promise<boolean>;
  close(): Promise<void>;
}

/** vrouter with ports a and b (connected, forwarding) and the named hostile ports, one bridge. */
export async function withNeighbours(hostile: string[], extra: { pmd?: object; ports?: Record<string, object> } = {}): Promise<Neighbours> {
  const names = ['a', 'b', ...hostile];
  const ports = names.map((name) => ({ name, socket: `{dir}/${name}.sock`, bridge: 'br0', ...(extra.ports?.[name] ?? {}) }));
  const vr = await startVrouter({ ports, pmd: extra.pmd ?? { cores: [1] } });
  const a = await startDevice(vr.sockets.a);
  const b = await startDevice(vr.sockets.b);
  const stillForward = async (frames = 64) =>
    (await trafficFlows(a, b, frames, MAC_A, MAC_B)) === frames && (await trafficFlows(b, a, frames, MAC_B, MAC_A)) === frames;
  await stillForward();
  return {
    vr,
    a,
    b,
    baseline: processResources(vr.proc.pid!),
    stillForward,
    async close() {
      a.close();
      b.close();
      await vr.stop();
    },
  };
}

/** A frontend that negotiated REPLY_ACK: refused requests are answered, not disconnected. */
export async function ackingFrontend(path: string): Promise<VhostFrontend> {
  const fe = await VhostFrontend.connect(path);
  fe.send(Req.GET_PROTOCOL_FEATURES);
  await fe.replyU64();
  fe.send(Req.SET_PROTOCOL_FEATURES, u64(PROTOCOL_MQ_REPLY_ACK_STATUS));
  return fe;
}

/**
 * One pass over the control-path attacks of this suite against one port's socket: fds of
 * the wrong kind, memory tables too big or that do not fit, set-ups cut short, replies
 * never read. Each case closes its own connection; the daemon must carry on.
 */
export async function controlPathAttacks(socket: string): Promise<void> {
  const ram = new GuestRam();
  const q = new DriverQueue(ram, 256, { eventIdx: true });
  const sparse = sys.memfdCreate('sparse');
  sys.ftruncate(sparse, 2 ** 42);
  const [pipeRead, pipeWrite] = pipe();
  const blocking = blockingEventfd();
  const ask = VERSION | FLAG_NEED_REPLY;
  const table = memTablePayload([{ gpa: ram.gpaBase, size: ram.size, uva: ram.uvaBase, offset: 0 }]);
  const attacks: ((fe: VhostFrontend) => Promise<void> | void)[] = [
    async (fe) => {
      for (const fd of [pipeRead, blocking, ram.fd]) await fe.request(Req.SET_VRING_KICK, u64(1), [fd]);
    },
    (fe) => fe.send(Req.SET_VRING_CALL, u64(0), [pipeWrite]),
    (fe) => fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 2 ** 42, uva: 0, offset: 0 }]), [sparse]).then(() => undefined),
    (fe) => fe.request(Req.SET_MEM_TABLE, memTablePayload([{ gpa: 0, size: 4097, uva: 0, offset: 0 }]), [ram.fd]).then(() => undefined),
    (fe) => {
      const l = q.layout();
      fe.send(Req.SET_FEATURES, u64((1n << 32n) | (1n << 30n) | (1n << 15n)), [], ask);
      fe.send(Req.SET_MEM_TABLE, table, [ram.fd], ask);
      fe.send(Req.SET_VRING_NUM, u32pair(1, 256), [], ask);
      fe.send(Req.SET_VRING_ADDR, vringAddrPayload(1, l.descAddr, l.usedAddr, l.availAddr), [], ask);
      fe.send(Req.SET_VRING_KICK, u64(1), [blocking], ask);
    },
    (fe) => {
      for (let i = 0; i < 2000; i++) fe.send(Req.SET_VRING_NUM, u32pair(9, 256), [], ask);
    },
    (fe) => fe.send(Req.GET_FEATURES, new Uint8Array(0), [], VERSION | 0x100),
  ];
  try {
    for (const attack of attacks) {
      const fe = await ackingFrontend(socket);
      try {
        await attack(fe);
      } catch {
        // the daemon closed the connection: one of the right answers
      }
      fe.close();
    }
  } finally {
    ram.close();
    sys.closeAll([sparse, pipeRead, pipeWrite, blocking]);
  }
}
