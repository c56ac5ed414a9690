// The config document's schema, in TypeBox (JSON Schema 2020-12): the one definition of what a
// config may hold. The file is checked against it (config.ts), so are the bodies of PUT /config
// and POST /ports, and /openapi.json publishes it. What a schema cannot say (defaults, paths
// taken from the file's folder, unique names, CPUs that exist, prefixes) config.ts checks after.
//
// `errorMessage` (the keyword of ajv-errors) says what a value must be where the constraint
// alone cannot say it in words (a pattern, a choice of types); schema-violation.ts uses it.
import { Type, type TOptional, type TUnknown } from './typebox.ts';

/** The bounds the schema holds values to: LIMITS of config.ts. */
export interface ConfigLimits {
  ports: number;
  mtuMin: number;
  mtuMax: number;
  queuesMax: number;
  sleepMaxUs: number;
  macLimitMax: number;
  uidMax: number;
}

const NAME = { pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$', errorMessage: "must be 1-32 letters, digits, '_', '.' or '-'" };
const MAC = { pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$', errorMessage: 'must look like 52:54:00:12:34:56' };
const NETNS = { pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$', errorMessage: "must be a network namespace name (as `ip netns` names them): 1-64 letters, digits, '_', '.' or '-'" };
const IFNAME = { pattern: '^[A-Za-z0-9_.-]{1,15}$', errorMessage: 'must be an interface name: 1-15 of A-Z a-z 0-9 _ . -' };
const PLUGIN_NAME = { pattern: '^[a-z][a-z0-9_-]{0,31}$', errorMessage: "a plugin name is 1-32 of a-z, 0-9, '_' and '-', starting with a letter" };

/** "127.0.0.1:8080", "[::1]:8080", "localhost:8080": the host (bracketed, or not) and the port as groups 1, 2, 3. */
export const ADMIN_TCP_LISTEN = '(?:\\[([0-9a-fA-F:.]+)\\]|([0-9.]+|localhost)):([0-9]{1,5})';

/**
 * The built-in plugins' keys at the top level of the config, with the plugin each belongs to.
 * The schema lets them through as they are: the plugin checks them (its parseConfig), and
 * config.ts hands them to it.
 */
export const PLUGIN_TOP_LEVEL_KEYS = {
  routes: { plugin: 'routing', description: 'static routes {"prefix", "via", "port", "metric", "blackhole"}: "via" a gateway in a connected subnet, or a list of them (ECMP)' },
  neighbours: { plugin: 'routing', description: 'static neighbours {"address", "mac", "port"}' },
  acl: { plugin: 'acl', description: 'ordered rules {"action": "permit" | "deny" | "reject", "protocol", "src", "dst", "srcPort", "dstPort", "icmpType", "icmpCode", "tcpFlags", "inPort", "outPort", "stateful", "policer"}; the first match wins' },
  aclDefault: { plugin: 'acl', description: 'the action for packets no rule matches: "permit" (the default), "deny" or "reject"' },
  policers: { plugin: 'ratelimit', description: 'policers {"name", "type": "srTCM" | "trTCM", "unit", "cir", "cbs", "ebs", "pir", "pbs", "colorAware", "colorMap", "actions", "apply"}, attached to ports, to ACL rules or per address' },
} as const;

function pluginKeyProperties<K extends string>(keys: Record<K, { plugin: string; description: string }>): { [P in K]: TOptional<TUnknown> } {
  const entries = Object.entries<{ plugin: string; description: string }>(keys).map(([key, { plugin, description }]) => [
    key,
    Type.Optional(Type.Unknown({ description: `${description}. Checked by the ${plugin} plugin, which must be in "pipeline"` })),
  ]);
  return Object.fromEntries(entries) as { [P in K]: TOptional<TUnknown> };
}

/** The whole config document's schema, for these limits. */
export function configDocumentSchema(limits: ConfigLimits) {
  const mtu = (description: string) => Type.Integer({ minimum: limits.mtuMin, maximum: limits.mtuMax, description });
  const cpu = (description: string) => Type.Integer({ minimum: 0, description });
  const uid = (description: string) => Type.Integer({ minimum: 0, maximum: limits.uidMax, description });
  const routerMac = (description: string) => Type.String({ ...MAC, description });
  const addresses = (description: string) =>
    Type.Array(Type.String({ errorMessage: 'must be an address with its prefix length, such as "10.0.1.1/24"' }), {
      errorMessage: 'must be an array of addresses with prefix lengths, such as "10.0.1.1/24"',
      description,
      examples: [['10.0.1.1/24', '2001:db8:1::1/64']],
    });
  const queuePairs = Array.from({ length: limits.queuesMax }, (_, q) => q);

  const rpf = (where: string) =>
    Type.Optional(
      Type.Enum(['off', 'strict', 'loose'], {
        description: `reverse-path filter of the packets the router takes ${where} (Linux's rp_filter, VPP's source check): strict: the source address must be routed back out of the same interface; loose: by any route but a blackhole; off (the default): no check. The router's own addresses are refused as sources in both modes; IPv6 link-local and unspecified sources are not checked. Needs "addresses"`,
      }),
    );

  const Port = Type.Object(
    {
      name: Type.String({ ...NAME, description: 'the port\'s name: 1-32 of A-Z a-z 0-9 _ . -, the first a letter or digit', examples: ['vm3'] }),
      type: Type.Optional(Type.Enum(['vhost-user', 'tap', 'af_packet', 'af_xdp', 'vlan'], { description: 'vhost-user (the default): a VM\'s virtio-net device, over "socket"; tap: a TAP interface vrouter creates ("interface"), the host\'s own network stack on its other side; af_packet: an existing kernel interface ("interface": a NIC, a veth), through memory-mapped packet rings; af_xdp: an existing kernel interface through AF_XDP sockets (copy mode; an XDP program steers each queue\'s frames to its socket; MTU at most 3822); vlan: an 802.1Q VLAN of another port ("parent", "vlan"), as Linux\'s eth0.10: the parent\'s frames tagged with the VLAN arrive here untagged, and what leaves here leaves the parent tagged' })),
      parent: Type.Optional(Type.String({ ...NAME, description: 'vlan: the port whose VLAN this is (a port of another type, the trunk); its untagged frames and those of VLANs no port has stay its own', examples: ['uplink'] })),
      vlan: Type.Optional(Type.Integer({ minimum: 1, maximum: 4094, description: 'vlan: the VLAN ID, 1-4094, one port per VLAN of a parent', examples: [10] })),
      socket: Type.Optional(Type.String({ minLength: 1, errorMessage: 'must be a path', description: 'vhost-user: the socket\'s path; a relative path is taken from the config file\'s folder', examples: ['/run/vrouter/vm3.sock'] })),
      interface: Type.Optional(Type.String({ ...IFNAME, description: 'tap: the name of the TAP interface vrouter creates; af_packet, af_xdp: the interface to send and receive on', examples: ['vr-host0'] })),
      bridge: Type.Optional(Type.String({ ...NAME, description: 'ports with the same bridge name are switched together (MAC learning; broadcast and unknown unicast flooded; entries age out after 300 s)' })),
      addresses: Type.Optional(addresses('the router\'s addresses on the port, with prefix lengths: the port is routed (an L3 port), its subnets are connected routes. Needs "routing" in "pipeline"')),
      routerMac: Type.Optional(routerMac('the router\'s MAC on the port: frames to it are routed (default: a locally administered MAC derived from the port name)')),
      mode: Type.Optional(Type.Enum(['server', 'client'], { description: 'server (the default): vrouter creates the socket and the VM connects; client: QEMU listens and vrouter connects, retrying every second' })),
      mac: Type.Optional(Type.String({ ...MAC, description: 'the guest\'s MAC on this port: a static entry in the bridge (never ages, never moves)' })),
      mtu: Type.Optional(mtu(`the largest IP packet, ${limits.mtuMin}-${limits.mtuMax} (default 1500); frames up to MTU + 18 bytes pass`)),
      queues: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.queuesMax, description: `vhost-user: queue pairs offered to the guest (virtio-net multiqueue); tap: the TAP interface's queues (IFF_MULTI_QUEUE), an fd each, polled like queue pairs, the host's flows spread over them by the kernel; af_packet: sockets with rings of their own, the interface's flows spread over them by hash (PACKET_FANOUT), each polled like a queue pair; af_xdp: an AF_XDP socket on each of the interface's queues 0 to queues - 1 (the interface must have that many). 1-${limits.queuesMax} (default 1)` })),
      rxqAffinity: Type.Optional(
        Type.Record(Type.String(), cpu('the CPU of the PMD that polls the queue pair'), {
          propertyNames: { pattern: `^(${queuePairs.join('|')})$`, errorMessage: `unknown key: queue pairs are numbered 0 to ${limits.queuesMax - 1}` },
          description: 'queue pair -> the CPU of the PMD that polls it ({"0": 1}); the other pairs are spread round-robin over the PMDs',
        }),
      ),
      macLimit: Type.Optional(Type.Integer({ minimum: 1, maximum: limits.macLimitMax, description: 'the most MAC addresses the bridge learns from this port, per PMD (default 256); past it, new sources are not learned' })),
      portSecurity: Type.Optional(Type.Boolean({ description: 'true: only the port\'s "mac" may be a source address; other frames are dropped. Needs "mac"' })),
      rpf: rpf('on the port'),
      routerAdvertisements: Type.Optional(Type.Boolean({ description: 'send IPv6 router advertisements on the port (periodic, and in answer to solicitations): hosts there take the router as their default and configure addresses from its prefixes. Default: true for vhost-user ports, false for uplinks (tap, af_packet, af_xdp: the host or the LAN behind them have routers of their own). Needs "addresses"; a bridge\'s is bridges.NAME.routerAdvertisements' })),
      offloads: Type.Optional(Type.Boolean({ description: 'offer the guest checksum and segmentation offloads (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6, ECN; default true): TCP super-frames and checksums left to do pass between guests that take them, and vrouter cuts the segments and completes the checksums for the others. Changing it disconnects the frontend: features are negotiated as it connects' })),
      memoryPolicy: Type.Optional(Type.Enum(['strict', 'warn'], { description: 'guest memory files that cannot be sealed against shrinking or are not on tmpfs/hugetlbfs: strict refuses them, warn (the default) maps them and logs a warning' })),
      socketMode: Type.Optional(Type.String({ pattern: '^0?[0-7]{3}$', errorMessage: 'must be an octal mode such as "0660"', description: 'server mode: the socket file\'s permission bits, octal text (default "0600"); modes that let other users in are refused', examples: ['0660'] })),
      socketGroup: Type.Optional(
        Type.Union([uid('a group number'), Type.String({ minLength: 1, description: 'a group name, from /etc/group' })], {
          errorMessage: 'must be a group name or number',
          description: 'server mode: the socket file\'s group, by name or number (default: vrouter\'s own group)',
        }),
      ),
      peerUid: Type.Optional(uid('the uid the frontend process must run as (SO_PEERCRED); a connection from any other uid is closed at once')),
      linuxMirror: Type.Optional(
        Type.Object(
          {
            netns: Type.String({ ...NETNS, description: 'the network namespace of the mirror (made if it does not exist): run FRR, BIRD or sshd there' }),
            interface: Type.Optional(Type.String({ ...IFNAME, description: 'the name of the mirror\'s TAP interface in the namespace (default: the port\'s name, if it is a valid interface name)' })),
          },
          {
            additionalProperties: false,
            description: 'a routed port\'s mirror in Linux (as VPP\'s linux-cp): a TAP interface in "netns" with the port\'s MAC, MTU and addresses; traffic for the router\'s addresses that vrouter does not answer itself goes to it, what Linux sends from it leaves through the port, and the routes, neighbours and addresses installed in the namespace are vrouter\'s too. Needs "addresses"',
          },
        ),
      ),
    },
    { additionalProperties: false, description: 'a port: an entry of "ports"' },
  );

  const Bridge = Type.Object(
    {
      addresses: Type.Optional(addresses('the router\'s addresses in the bridge (its leg in the segment): its VMs route through them. Needs "routing" in "pipeline"')),
      routerMac: Type.Optional(routerMac('the router\'s MAC in the bridge (default: derived from the bridge name)')),
      mtu: Type.Optional(mtu('the MTU of the router\'s leg in the bridge (default: the smallest of its ports\')')),
      rpf: rpf('in the bridge'),
      routerAdvertisements: Type.Optional(Type.Boolean({ description: 'send IPv6 router advertisements in the bridge (default true)' })),
    },
    { additionalProperties: false, description: 'a bridge\'s own settings' },
  );

  const Pmd = Type.Object(
    {
      cores: Type.Optional(
        Type.Array(cpu('a CPU number'), {
          minItems: 1,
          errorMessage: 'must be a non-empty array of CPU numbers',
          description: 'the CPUs of the poll-mode threads, one PMD per entry, each pinned to its CPU (default: one PMD on the highest-numbered CPU)',
          examples: [[1, 2]],
        }),
      ),
      sleepMaxUs: Type.Optional(Type.Integer({ minimum: 0, maximum: limits.sleepMaxUs, description: 'an idle PMD sleeps in growing steps up to this many µs (default 10000); 0 polls without ever sleeping' })),
      spare: Type.Optional(Type.Boolean({ description: 'keep a second data-plane process loaded and waiting, to take over at once when the running one dies (default true); false saves its memory, and a death then costs a cold start' })),
    },
    { additionalProperties: false, description: 'the poll-mode threads' },
  );

  const Control = Type.Object(
    {
      nice: Type.Optional(
        Type.Integer({
          minimum: -20,
          maximum: 19,
          errorMessage: 'must be an integer from -20 to 19',
          description: "the nice value of vrouter's control threads (the supervisor's main thread, the vhost control thread, the main thread of the data plane that serves the queues, and a spare's once it has loaded; default -10): a hand-over of the queues to new PMDs (a data-plane death, an upgrade) is not kept waiting by other work on the CPUs they share. The PMDs, the job pool that compiles tables, a spare data plane while it loads and its other threads run at 0. Below 0 needs root or CAP_SYS_NICE; without, they run at 0",
        }),
      ),
    },
    { additionalProperties: false, description: "vrouter's control threads" },
  );

  const Plugin = Type.Object(
    { path: Type.Optional(Type.String({ minLength: 1, errorMessage: 'must be the path of the plugin module', description: 'the plugin module; a relative path is taken from the config file\'s folder. A built-in plugin takes none' })) },
    { additionalProperties: true, description: 'a plugin: its "path" and its own keys, which it checks itself' },
  );

  const Admin = Type.Object(
    {
      listen: Type.Optional(
        Type.String({
          pattern: `^(?:unix:.*|${ADMIN_TCP_LISTEN})$`,
          errorMessage: 'must be "unix:/path" or "HOST:PORT" ("127.0.0.1:8080", "[::1]:8080")',
          description: 'where the admin endpoint listens: "unix:/path" or "HOST:PORT" (default: unix socket admin.sock next to the config file); an address other than loopback needs "tokenFile"',
          examples: ['unix:/run/vrouter/admin.sock', '127.0.0.1:8080'],
        }),
      ),
      tokenFile: Type.Optional(Type.String({ minLength: 1, errorMessage: 'must be the path of a file holding the token', description: 'a file holding the bearer token every request but a GET, and every capture, needs' })),
      headersTimeout: Type.Optional(
        Type.Number({ minimum: 1, maximum: 300, errorMessage: 'must be a number of seconds from 1 to 300', description: 'seconds a connection has to start its first request, and a request to bring its headers (default 10); the whole request has 30, or this if longer' }),
      ),
      stalledAnswerTimeout: Type.Optional(
        Type.Number({ minimum: 1, maximum: 3600, errorMessage: 'must be a number of seconds from 1 to 3600', description: 'seconds an answer may wait with nothing of it read by its client before the connection ends (default 30)' }),
      ),
    },
    { additionalProperties: false, description: 'the admin endpoint' },
  );

  const RouteSource = Type.Union(
    [
      Type.Object(
        {
          type: Type.Literal('netlink', { description: 'the routes of a network namespace\'s main table, through netlink' }),
          netns: Type.String({ ...NETNS, description: 'the network namespace (as `ip netns` names it)' }),
        },
        { additionalProperties: false },
      ),
      Type.Object(
        {
          type: Type.Literal('fpm', { description: 'routes FRR\'s zebra pushes (dplane_fpm_nl: netlink messages over TCP)' }),
          listen: Type.String({ pattern: `^${ADMIN_TCP_LISTEN}$`, errorMessage: 'must be "HOST:PORT" ("127.0.0.1:2620")', description: 'where vrouter listens for zebra', examples: ['127.0.0.1:2620'] }),
          peers: Type.Optional(Type.Array(Type.String({ description: 'an IPv4 or IPv6 address' }), { minItems: 1, maxItems: 64, description: 'the addresses zebra may connect from; others are refused (counted). Required when "listen" is not loopback: FPM has no authentication of its own', examples: [['192.0.2.10']] })),
        },
        { additionalProperties: false },
      ),
    ],
    { errorMessage: 'must be {"type": "netlink", "netns": NAME} or {"type": "fpm", "listen": "HOST:PORT"}', description: 'a source of routes besides the config' },
  );

  return Type.Object(
    {
      ports: Type.Array(Port, { minItems: 1, maxItems: limits.ports, errorMessage: `must be a non-empty array of at most ${limits.ports} ports`, description: 'the ports: vhost-user (VMs) and uplinks (kernel interfaces)' }),
      pmd: Type.Optional(Pmd),
      control: Type.Optional(Control),
      bridges: Type.Optional(Type.Record(Type.String(), Bridge, { description: 'bridge name -> its own settings' })),
      pipeline: Type.Optional(
        Type.Array(Type.String({ errorMessage: 'must be the name of a stage' }), {
          errorMessage: 'must be an array of stage names',
          description: 'the stages every burst goes through, in order: the built-ins "routing", "bridge", "acl", "ratelimit" and plugins defined in "plugins" (default ["bridge"]); "routing" must come before "bridge"',
          examples: [['routing', 'acl', 'ratelimit']],
        }),
      ),
      plugins: Type.Optional(Type.Record(Type.String(), Plugin, { propertyNames: PLUGIN_NAME, description: 'plugin name -> the plugin' })),
      admin: Type.Optional(Admin),
      routeSources: Type.Optional(
        Type.Array(RouteSource, {
          description: 'where routes come from besides "routes": a network namespace\'s table (netlink) or FRR\'s FPM; "routes" win over them for the same prefix, and a lower metric wins among them. A port\'s linuxMirror namespace is one without being listed',
        }),
      ),
      ...pluginKeyProperties(PLUGIN_TOP_LEVEL_KEYS),
    },
    { additionalProperties: false, title: 'vrouter config', description: 'a whole config document, as the file holds it' },
  );
}
