// Ports added and removed, and queues moved between PMDs, while vrouter runs: what an
// orchestrator attaching a VM does, and what an operator balancing PMDs does
// (ovs-vsctl add-port / del-port, pmd-rxq-affinity).
import { resolve } from 'node:path';
import { showChange } from './changes.ts';
import { misuse, segment, type Command } from './command.ts';

/** The settings `port add` takes as WORD VALUE pairs, and how each goes into the body. */
const SETTINGS: Record<string, (body: Record<string, unknown>, value: string) => void> = {
  bridge: (b, v) => (b.bridge = v),
  address: (b, v) => (b.addresses = [...((b.addresses as string[] | undefined) ?? []), v]),
  mode: (b, v) => (b.mode = v),
  mac: (b, v) => (b.mac = v),
  'router-mac': (b, v) => (b.routerMac = v),
  mtu: (b, v) => (b.mtu = wholeNumber(v)),
  queues: (b, v) => (b.queues = wholeNumber(v)),
};

/** A number the endpoint will range-check; anything else stays a string for it to refuse. */
function wholeNumber(value: string): number | string {
  return /^\d+$/.test(value) ? Number(value) : value;
}

/** The WORD VALUE pairs of `command` into `body`. */
function withSettings(command: Command, body: Record<string, unknown>, rest: string[], words: readonly string[]): Record<string, unknown> {
  for (let i = 0; i < rest.length; i += 2) {
    const set = words.includes(rest[i]) ? SETTINGS[rest[i]] : undefined;
    if (set === undefined) throw misuse(command, `unknown word ${JSON.stringify(rest[i])}: expected ${words.join(', ')}`);
    if (rest[i + 1] === undefined) throw misuse(command, `${rest[i]} needs a value`);
    set(body, rest[i + 1]);
  }
  return body;
}

const portAdd: Command = {
  words: ['port', 'add'], args: 'NAME SOCKET [bridge B] [address A/LEN]... [mode client] [queues N] [mtu N] [mac M] [router-mac M]', min: 2, max: 64,
  summary: 'adds a vhost-user port; the other ports stay connected',
  run: async (ctx, [name, socket, ...rest]) => {
    // A relative socket path means here, where the command runs, not where vrouter's config is.
    const body = withSettings(portAdd, { name, socket: resolve(socket) }, rest, Object.keys(SETTINGS));
    showChange(ctx, await ctx.api.post('/ports', body));
  },
};

const vlanAdd: Command = {
  words: ['port', 'add-vlan'], args: 'NAME PARENT VLAN [bridge B] [address A/LEN]... [mtu N] [mac M] [router-mac M]', min: 3, max: 64,
  summary: 'adds VLAN port NAME: the frames of PARENT tagged VLAN (1-4094), untagged (ip link add link PARENT name NAME type vlan id VLAN)',
  run: async (ctx, [name, parent, vlan, ...rest]) => {
    const body = withSettings(vlanAdd, { name, type: 'vlan', parent, vlan: wholeNumber(vlan) }, rest, ['bridge', 'address', 'mtu', 'mac', 'router-mac']);
    showChange(ctx, await ctx.api.post('/ports', body));
  },
};

export const portChangeCommands: Command[] = [
  portAdd,
  vlanAdd,
  {
    words: ['port', 'del'], args: 'NAME', min: 1, max: 1, summary: 'removes a port: its frontend is disconnected, its socket removed',
    run: async (ctx, [name]) => showChange(ctx, await ctx.api.delete(`/ports/${segment(name)}`)),
  },
  {
    words: ['queue', 'move'], args: 'PORT QUEUE CPU', min: 3, max: 3, summary: 'moves a queue pair of PORT to the PMD on CPU (the frontend stays connected)',
    run: async (ctx, [port, queue, cpu]) => {
      if (!/^\d+$/.test(cpu)) throw misuse(portChangeCommands[3], `CPU must be a whole number, got ${JSON.stringify(cpu)}`);
      showChange(ctx, await ctx.api.put(`/ports/${segment(port)}/queues/${segment(queue)}`, { cpu: Number(cpu) }));
    },
  },
];
