// Config validation: what operators write is accepted with its defaults filled in, and
// every mistake is refused with the field at fault and the reason.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigDocument, ConfigError, parseConfig, readAdminToken } from '../../src/control/config.ts';
import { daemonEnv, REPO, VROUTER_BIN } from '../support/vrouter-process.ts';

const port = (over: object = {}) => ({ name: 'a', socket: '/tmp/a.sock', bridge: 'br0', ...over });
const routed = (over: object = {}) => ({ name: 'a', socket: '/tmp/a.sock', addresses: ['10.0.1.1/24'], ...over });

t.test('the contract config, with defaults', async (t) => {
  const c = parseConfig({ ports: [port(), port({ name: 'b', socket: 'b.sock' })] }, '/etc/vrouter', 4);
  t.same(c.ports[0], {
    name: 'a', type: 'vhost-user', parent: null, vlan: 0, socket: '/tmp/a.sock', interface: null, bridge: 'br0', mode: 'server', mac: null, mtu: 1500, queues: 1, rxqAffinity: {},
    macLimit: 256, portSecurity: false, rpf: 'off', routerAdvertisements: true, memoryPolicy: 'warn', offloads: true, socketMode: 0o600, socketGroup: null, peerUid: null,
    addresses: [], routerMac: c.ports[0].routerMac, linuxMirror: null, mirror: null,
  });
  t.match(c.ports[0].routerMac, /^02(:[0-9a-f]{2}){5}$/, 'the router MAC is locally administered');
  t.not(c.ports[0].routerMac, c.ports[1].routerMac, 'and differs by port');
  t.equal(parseConfig({ ports: [port()] }, '/', 4).ports[0].routerMac, c.ports[0].routerMac, 'and stays the same across restarts');
  t.equal(c.ports[1].socket, '/etc/vrouter/b.sock', 'relative socket paths are taken from the config file directory');
  t.same(c.pmd, { cores: [3], sleepMaxUs: 10_000, spare: true }, 'one PMD on the highest-numbered CPU, and a spare data plane');
});

t.test('every optional key', async (t) => {
  const client = { mode: 'client', mac: '52:54:00:AB:cd:01', mtu: 9000, queues: 2, rxqAffinity: { 1: 0 }, macLimit: 4096, portSecurity: true, memoryPolicy: 'strict', offloads: false, peerUid: 1000 };
  const server = { name: 'b', socket: '/tmp/b.sock', socketMode: '0660', socketGroup: 0 };
  const c = parseConfig({ ports: [port(client), port(server)], pmd: { cores: [1, 0], sleepMaxUs: 0, spare: false } }, '/', 2);
  t.same(c.ports[0], {
    name: 'a', type: 'vhost-user', parent: null, vlan: 0, socket: '/tmp/a.sock', interface: null, bridge: 'br0', mode: 'client', mac: '52:54:00:ab:cd:01', mtu: 9000, queues: 2, rxqAffinity: { 1: 0 },
    macLimit: 4096, portSecurity: true, rpf: 'off', routerAdvertisements: true, memoryPolicy: 'strict', offloads: false, socketMode: 0o600, socketGroup: null, peerUid: 1000,
    addresses: [], routerMac: c.ports[0].routerMac, linuxMirror: null, mirror: null,
  });
  t.equal(c.ports[1].socketMode, 0o660, 'socketMode is octal text');
  t.equal(c.ports[1].socketGroup, 0);
  t.equal(parseConfig({ ports: [port({ socketGroup: 'root' })] }, '/', 2).ports[0].socketGroup, 0, 'a group by name');
  t.same(c.pmd, { cores: [1, 0], sleepMaxUs: 0, spare: false });
});

t.test('mistakes name the field and the reason', async (t) => {
  const cases: [unknown, string, RegExp][] = [
    [[], '', /must be an object/],
    [{}, 'ports', /non-empty array/],
    [{ ports: [port()], extra: 1 }, 'extra', /unknown key/],
    [{ ports: [port({ nmae: 'x' })] }, 'ports[0].nmae', /unknown key/],
    [{ ports: [port({ name: '' })] }, 'ports[0].name', /letters, digits/],
    [{ ports: [port({ name: 'a/b' })] }, 'ports[0].name', /letters, digits, '_', '\.' or '-', got "a\/b"/],
    [{ ports: [{ socket: '/tmp/a.sock' }] }, 'ports[0].name', /letters, digits.*got nothing/],
    [{ ports: [port({ socket: 5 })] }, 'ports[0].socket', /path/],
    [{ ports: [port({ socket: '/' + 'x'.repeat(120) })] }, 'ports[0].socket', /longer than the 107 bytes/],
    [{ ports: [port({ mode: 'listen' })] }, 'ports[0].mode', /"server" or "client"/],
    [{ ports: [port({ mac: '52:54:00:00:00' })] }, 'ports[0].mac', /must look like/],
    [{ ports: [port({ mac: '01:00:5e:00:00:01' })] }, 'ports[0].mac', /multicast/],
    [{ ports: [port({ mtu: 9001 })] }, 'ports[0].mtu', /must be an integer from 68 to 9000, got 9001/],
    [{ ports: [port({ mtu: '1500' })] }, 'ports[0].mtu', /integer from 68 to 9000, got "1500"/],
    [{ ports: [port({ queues: 0 })] }, 'ports[0].queues', /1 to 8/],
    [{ ports: [port(), port({ socket: '/tmp/b.sock' })] }, 'ports[1].name', /already the name of ports\[0\]/],
    [{ ports: [port(), port({ name: 'b' })] }, 'ports[1].socket', /already the socket of ports\[0\]/],
    [{ ports: [{ name: 'a' }] }, 'ports[0].socket', /a vhost-user port needs "socket"/],
    [{ ports: [port({ type: 'tun' })] }, 'ports[0].type', /"vhost-user", "tap", "af_packet", "af_xdp" or "vlan"/],
    [{ ports: [port({ interface: 'eth0' })] }, 'ports[0].interface', /applies to tap, af_packet and af_xdp ports only/],
    [{ ports: [{ name: 'u', type: 'af_packet' }] }, 'ports[0].interface', /an af_packet port needs "interface"/],
    [{ ports: [{ name: 'u', type: 'af_packet', interface: 'eth0', peerUid: 0 }] }, 'ports[0].peerUid', /applies to vhost-user ports only \(this port is "type": "af_packet"\)/],
    [{ ports: [{ name: 'u', type: 'af_xdp' }] }, 'ports[0].interface', /an af_xdp port needs "interface"/],
    [{ ports: [{ name: 'u', type: 'af_xdp', interface: 'eth0', mtu: 4000 }] }, 'ports[0].mtu', /MTU at most 3822/],
    [{ ports: [{ name: 'u', type: 'af_xdp', interface: 'eth0', socket: '/tmp/u.sock' }] }, 'ports[0].socket', /applies to vhost-user ports only \(this port is "type": "af_xdp"\)/],
    [{ ports: [{ name: 't', type: 'tap' }] }, 'ports[0].interface', /a tap port needs "interface"/],
    [{ ports: [{ name: 't', type: 'tap', interface: 'a-name-too-long0' }] }, 'ports[0].interface', /1-15 of/],
    [{ ports: [{ name: 't', type: 'tap', interface: 'vr0', socket: '/tmp/t.sock' }] }, 'ports[0].socket', /applies to vhost-user ports only/],
    [{ ports: [{ name: 't', type: 'tap', interface: 'vr0', offloads: false }] }, 'ports[0].offloads', /applies to vhost-user ports only/],
    [{ ports: [{ name: 'a', socket: '/tmp/a.sock', offloads: 'yes' }] }, 'ports[0].offloads', /must be true or false, got "yes"/],
    [{ ports: [{ name: 't', type: 'tap', interface: 'vr0', queues: 9 }] }, 'ports[0].queues', /1 to 8/],
    [{ ports: [{ name: 't', type: 'tap', interface: 'vr0' }, { name: 'u', type: 'tap', interface: 'vr0' }] }, 'ports[1].interface', /vr0 is already the interface of ports\[0\]/],
    [{ ports: [port()], pmd: { cores: [] } }, 'pmd.cores', /non-empty/],
    [{ ports: [port()], pmd: { cores: [2] } }, 'pmd.cores[0]', /0 to 1/],
    [{ ports: [port()], pmd: { cores: [1, 1] } }, 'pmd.cores', /listed twice/],
    [{ ports: [port({ queues: 2, rxqAffinity: { 1: 0 } })], pmd: { cores: [1] } }, 'ports[0].rxqAffinity.1', /CPU 0 runs no PMD/],
    [{ ports: [port({ rxqAffinity: { 3: 1 } })] }, 'ports[0].rxqAffinity.3', /unknown key: the port has queue pairs 0 to 0/],
    [{ ports: [port({ queues: 8, rxqAffinity: { 8: 1 } })] }, 'ports[0].rxqAffinity.8', /queue pairs are numbered 0 to 7/],
    [{ ports: [port()], pmd: { sleepMaxUs: -1 } }, 'pmd.sleepMaxUs', /integer/],
    [{ ports: [port({ macLimit: 0 })] }, 'ports[0].macLimit', /1 to 4096/],
    [{ ports: [port({ portSecurity: 'yes' })] }, 'ports[0].portSecurity', /true or false/],
    [{ ports: [port({ portSecurity: true })] }, 'ports[0].portSecurity', /needs the port's "mac"/],
    [{ ports: [routed({ rpf: 'on' })] }, 'ports[0].rpf', /"off", "strict" or "loose"/],
    [{ ports: [port({ rpf: 'strict' })] }, 'ports[0].rpf', /the port is in bridge br0: the router's filter in that segment goes in bridges\.br0\.rpf/],
    [{ ports: [{ name: 'a', socket: '/tmp/a.sock', rpf: 'loose' }] }, 'ports[0].rpf', /needs the port's "addresses"/],
    [{ ports: [port()], bridges: { br0: { rpf: 'strict' } } }, 'bridges.br0.rpf', /needs the bridge's "addresses"/],
    [{ ports: [port({ routerAdvertisements: false })] }, 'ports[0].routerAdvertisements', /the port is in bridge br0: the router advertises in that segment as bridges\.br0\.routerAdvertisements says/],
    [{ ports: [{ name: 'a', socket: '/tmp/a.sock', routerAdvertisements: true }] }, 'ports[0].routerAdvertisements', /needs the port's "addresses"/],
    [{ ports: [port()], bridges: { br0: { routerAdvertisements: true } } }, 'bridges.br0.routerAdvertisements', /needs the bridge's "addresses"/],
    [{ ports: [routed({ routerAdvertisements: 'yes' })] }, 'ports[0].routerAdvertisements', /must be true or false, got "yes"/],
    [{ ports: [port({ memoryPolicy: 'lax' })] }, 'ports[0].memoryPolicy', /"strict" or "warn"/],
    [{ ports: [port()], admin: { headersTimeout: 0 } }, 'admin.headersTimeout', /seconds from 1 to 300/],
    [{ ports: [port()], admin: { headersTimeout: '10' } }, 'admin.headersTimeout', /seconds from 1 to 300/],
    [{ ports: [port()], admin: { stalledAnswerTimeout: 3601 } }, 'admin.stalledAnswerTimeout', /seconds from 1 to 3600/],
    [{ ports: [port({ socketMode: 660 })] }, 'ports[0].socketMode', /octal mode/],
    [{ ports: [port({ socketMode: '0666' })] }, 'ports[0].socketMode', /any local user/],
    [{ ports: [port({ socketMode: '0060' })] }, 'ports[0].socketMode', /owner read and write/],
    [{ ports: [port({ socketGroup: 'no-such-group-here' })] }, 'ports[0].socketGroup', /no group named/],
    [{ ports: [port({ socketGroup: -1 })] }, 'ports[0].socketGroup', /a group name or number, got -1/],
    [{ ports: [port({ mode: 'client', socketMode: '0660' })] }, 'ports[0].socketMode', /server mode only/],
    [{ ports: [port({ peerUid: -1 })] }, 'ports[0].peerUid', /integer/],
    [{ ports: [port({ addresses: '10.0.1.1/24' })] }, 'ports[0].addresses', /array of addresses with prefix lengths/],
    [{ ports: [port({ addresses: ['10.0.1.1'] })] }, 'ports[0].addresses[0]', /needs its prefix length/],
    [{ ports: [routed({ addresses: ['10.0.1.0/24'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /10\.0\.1\.0\/24 is the subnet's network address/],
    [{ ports: [routed({ addresses: ['10.0.1.1/24', '10.0.3.255/23'] })], pipeline: ['routing'] }, 'ports[0].addresses[1]', /10\.0\.3\.255\/23 is the subnet's broadcast address/],
    [{ ports: [routed({ addresses: ['127.0.0.2/8'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /127\.0\.0\.2\/8 is a loopback address \(127\/8\): not an interface's/],
    [{ ports: [routed({ addresses: ['240.0.0.1/24'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /240\.0\.0\.1\/24 is in 240\/4 \(reserved\): not an interface's/],
    [{ ports: [routed({ addresses: ['0.1.2.3/8'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /is in 0\/8 \("this network"\)/],
    [{ ports: [routed({ addresses: ['239.1.1.1/24'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /239\.1\.1\.1\/24 is a multicast address/],
    [{ ports: [routed({ addresses: ['ff05::1/64'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /ff05::1\/64 is a multicast address/],
    [{ ports: [routed({ addresses: ['::/64'] })], pipeline: ['routing'] }, 'ports[0].addresses[0]', /is the unspecified address/],
    [{ ports: [routed(), routed({ name: 'b', socket: '/tmp/b.sock', addresses: ['10.0.2.1/24', '10.0.1.2/24'] })], pipeline: ['routing'] }, 'ports[1].addresses[1]', /10\.0\.1\.2\/24 is in the subnet of 10\.0\.1\.1\/24 on port a \(ports\[0\]\.addresses\[0\]\): a subnet is on one interface/],
    [{ ports: [routed(), port({ name: 'c', socket: '/tmp/c.sock' })], bridges: { br0: { addresses: ['10.0.1.9/24'] } }, pipeline: ['routing'] }, 'bridges.br0.addresses[0]', /is in the subnet of 10\.0\.1\.1\/24 on port a/],
    [{ ports: [routed(), routed({ name: 'b', socket: '/tmp/b.sock', addresses: ['10.0.1.1/16'] })], pipeline: ['routing'] }, 'ports[1].addresses[0]', /10\.0\.1\.1 is already the router's address on port a \(ports\[0\]\.addresses\[0\]\): an address is on one interface/],
    [{ ports: [routed(), port({ name: 'c', socket: '/tmp/c.sock', addresses: ['10.0.8.1/24'] })], pipeline: ['routing'] }, 'ports[1].addresses', /the port is in bridge br0: the router's addresses in that segment go in bridges\.br0\.addresses/],
    [{ ports: [routed({ addresses: ['10.0.1.1/24', '2001:db8::1/64'], mtu: 1279 })], pipeline: ['routing'] }, 'ports[0].mtu', /1279 is below 1280, the least IPv6 allows \(RFC 8200\), and the port has IPv6 addresses/],
    [{ ports: [port({ mtu: 1200 }), port({ name: 'c', socket: '/tmp/c.sock' })], bridges: { br0: { addresses: ['2001:db8::1/64'] } }, pipeline: ['routing'] }, 'ports[0].mtu', /1200 \(the bridge's MTU, its smallest port's\) is below 1280/],
    [{ ports: [port()], bridges: { br0: { addresses: ['2001:db8::1/64'], mtu: 1000 } }, pipeline: ['routing'] }, 'bridges.br0.mtu', /1000 is below 1280/],
    [{ ports: [port({ mac: '00:00:00:00:00:00' })] }, 'ports[0].mac', /00:00:00:00:00:00 is all zero: no station has it/],
    [{ ports: [routed({ routerMac: '00:00:00:00:00:00' })], pipeline: ['routing'] }, 'ports[0].routerMac', /all zero/],
    [{ ports: [port()], bridges: { br0: { routerMac: '00:00:00:00:00:00' } } }, 'bridges.br0.routerMac', /all zero/],
    [{ ports: [port({ mac: '02:00:00:00:00:09' }), port({ name: 'c', socket: '/tmp/c.sock', mac: '02:00:00:00:00:09' })] }, 'ports[1].mac', /02:00:00:00:00:09 is already the mac of ports\[0\] \(a\) in bridge br0: a MAC is on one port/],
    [{ ports: [port({ mac: '02:00:00:00:00:09' })], bridges: { br0: { routerMac: '02:00:00:00:00:09' } } }, 'ports[0].mac', /is the router's own MAC in bridge br0 \(bridges\.br0\.routerMac\)/],
    [{ ports: [routed({ mac: '02:00:00:00:00:09', routerMac: '02:00:00:00:00:09' })], pipeline: ['routing'] }, 'ports[0].mac', /is the router's own MAC on the port \(routerMac\)/],
    [{ ports: [port()], pmd: { cores: [1], spin: true } }, 'pmd.spin', /unknown key \(known: cores, sleepMaxUs, spare\)/],
    [{ ports: [port()], pmd: { spare: 'yes' } }, 'pmd.spare', /must be true or false/],
    [{ ports: [port()], bridges: { br0: { mtu: 9001 } } }, 'bridges.br0.mtu', /68 to 9000, got 9001/],
    [{ ports: [port()], pipeline: ['bridge', 7] }, 'pipeline[1]', /name of a stage, got 7/],
    [{ ports: [port()], admin: { listen: 'localhost' } }, 'admin.listen', /"unix:\/path" or "HOST:PORT"/],
    [{ ports: [port()], admin: { listen: '127.0.0.1:70000' } }, 'admin.listen', /port must be from 1 to 65535, got 70000/],
    [{ ports: [routed({ linuxMirror: {} })], pipeline: ['routing'] }, 'ports[0].linuxMirror.netns', /network namespace name/],
    [{ ports: [routed({ linuxMirror: { netns: 'a/b' } })], pipeline: ['routing'] }, 'ports[0].linuxMirror.netns', /network namespace name/],
    [{ ports: [port({ linuxMirror: { netns: 'lcp' } })], pipeline: ['routing'] }, 'ports[0].linuxMirror', /needs the port's "addresses"/],
    [{ ports: [routed({ name: 'a-very-long-port-name', linuxMirror: { netns: 'lcp' } })], pipeline: ['routing'] }, 'ports[0].linuxMirror.interface', /is needed: the port's name "a-very-long-port-name" is not a valid interface name/],
    [{ ports: [routed({ linuxMirror: { netns: 'lcp', interface: 'x', mtu: 1 } })], pipeline: ['routing'] }, 'ports[0].linuxMirror.mtu', /unknown key/],
    [{ ports: [routed({ linuxMirror: { netns: 'lcp' } }), routed({ name: 'a.linux', socket: '/tmp/x.sock' })], pipeline: ['routing'] }, 'ports[1].name', /"a.linux" is the name of ports\[0\]'s Linux mirror/],
    [{ ports: [routed({ linuxMirror: { netns: 'lcp', interface: 'm' } }), routed({ name: 'b', socket: '/tmp/b.sock', linuxMirror: { netns: 'lcp', interface: 'm' } })], pipeline: ['routing'] }, 'ports[1].linuxMirror.interface', /m in lcp is already the mirror of ports\[0\]/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'bgp' }] }, 'routeSources[0]', /"type": "netlink", "netns": NAME\} or \{"type": "fpm"/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: '127.0.0.1:0' }] }, 'routeSources[0].listen', /port must be from 1 to 65535/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'netlink', netns: 'x' }, { type: 'netlink', netns: 'x' }] }, 'routeSources[1]', /netlink x is listed twice/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: '0.0.0.0:2620' }] }, 'routeSources[0].peers', /required when listening on 0\.0\.0\.0:2620, which is not loopback/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: '[2001:db8::1]:2620', peers: ['2001:db8::2', '10.0.0.0/8'] }] }, 'routeSources[0].peers[1]', /must be an address, without a \/length/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: '127.0.0.1:2620', peers: [] }] }, 'routeSources[0].peers', /must be an array of 1 to 64 entries, got an empty array/],
    [{ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: 'zebra' }] }, 'routeSources[0].listen', /must be "HOST:PORT"/],
    [{ ports: [port()], routeSources: [] }, 'routeSources', /needs the "routing" stage/],
    [{ ports: [routed()], pipeline: ['routing'], plugins: { routing: { learnedRoutes: [] } } }, 'plugins.routing.learnedRoutes', /comes from "routeSources"/],
  ];
  for (const [raw, field, reason] of cases) {
    const err = t.throws(() => parseConfig(raw, '/', 2)) as ConfigError;
    t.equal(err.field, field, `${JSON.stringify(raw)}: field`);
    t.match(err.message, reason, `${field}: reason`);
    t.equal(err.code, 'VR_CONFIG');
  }
});

t.test('nested subnets on two interfaces are kept (the longest prefix decides); the same subnet on one interface twice too', async (t) => {
  const c = parseConfig({ ports: [routed(), routed({ name: 'b', socket: '/tmp/b.sock', addresses: ['10.0.2.1/16', '10.0.9.1/31', '10.0.9.3/32'] }), routed({ name: 'd', socket: '/tmp/d.sock', addresses: ['10.1.0.1/24', '10.1.0.2/24'] })], pipeline: ['routing'] }, '/', 2);
  t.same(c.ports.map((p) => p.addresses), [['10.0.1.1/24'], ['10.0.2.1/16', '10.0.9.1/31', '10.0.9.3/32'], ['10.1.0.1/24', '10.1.0.2/24']]);
});

t.test('long lists are checked for repeats in one pass: 20,000 route sources, 20,000 addresses', async (t) => {
  const sources = Array.from({ length: 20_000 }, (_, i) => ({ type: 'netlink', netns: `n${i}` }));
  let started = performance.now();
  t.throws(() => parseConfig({ ports: [routed()], pipeline: ['routing'], routeSources: [...sources, { type: 'netlink', netns: 'n7' }] }, '/', 2), new ConfigError('routeSources[20000]', 'netlink n7 is listed twice'));
  t.ok(performance.now() - started < 3000, `route sources checked in ${Math.round(performance.now() - started)} ms`);
  const addresses = Array.from({ length: 20_000 }, (_, i) => `10.${i >> 8}.${i & 255}.1/32`);
  started = performance.now();
  t.throws(() => parseConfig({ ports: [routed({ addresses: [...addresses, '10.0.7.1/32'] })], pipeline: ['routing'] }, '/', 2), new ConfigError('ports[0].addresses[20000]', '10.0.7.1/32 is listed twice'));
  t.ok(performance.now() - started < 3000, `addresses checked in ${Math.round(performance.now() - started)} ms`);
});

t.test('reverse-path filters on a routed port and on a bridge with addresses', async (t) => {
  const c = parseConfig({ ports: [routed({ rpf: 'strict' }), port({ name: 'c', socket: '/tmp/c.sock' })], bridges: { br0: { addresses: ['10.0.3.1/24'], rpf: 'loose' } }, pipeline: ['routing'] }, '/', 2);
  t.same([c.ports[0].rpf, c.ports[1].rpf, c.bridges.br0.rpf], ['strict', 'off', 'loose']);
  const mirrored = parseConfig({ ports: [routed({ rpf: 'strict', linuxMirror: { netns: 'vr' } })], pipeline: ['routing'] }, '/', 2);
  t.same(mirrored.ports.map((p) => [p.name, p.rpf]), [['a', 'strict'], ['a.linux', 'off']], "the mirror's TAP port is not filtered: Linux sends from the router's addresses");
});

t.test('router advertisements: on for guests and bridges, off for uplinks, unless said otherwise', async (t) => {
  const c = parseConfig(
    {
      ports: [
        routed({ addresses: ['2001:db8:1::1/64'] }),
        { name: 'u', type: 'af_packet', interface: 'eth1', addresses: ['2001:db8:2::1/64'] },
        { name: 't', type: 'tap', interface: 'tap7', addresses: ['2001:db8:3::1/64'], routerAdvertisements: true },
        routed({ name: 'g', socket: '/tmp/g.sock', addresses: ['2001:db8:4::1/64'], routerAdvertisements: false }),
        port({ name: 'c', socket: '/tmp/c.sock' }),
        { name: 'v', type: 'af_packet', interface: 'eth2', bridge: 'br1' },
      ],
      bridges: { br0: { addresses: ['2001:db8:5::1/64'] }, br1: { addresses: ['2001:db8:6::1/64'] } },
      pipeline: ['routing'],
    },
    '/',
    2,
  );
  t.same(c.ports.map((p) => [p.name, p.routerAdvertisements]), [['a', true], ['u', false], ['t', true], ['g', false], ['c', true], ['v', false]]);
  t.equal(c.bridges.br0.routerAdvertisements, true);
  t.equal(c.bridges.br1.routerAdvertisements, false, 'a bridge with an uplink in it is the LAN segment: off');
  t.equal(parseConfig({ ports: [port()], bridges: { br0: { addresses: ['2001:db8:5::1/64'], routerAdvertisements: false } }, pipeline: ['routing'] }, '/', 2).bridges.br0.routerAdvertisements, false);
});

t.test("ports and bridges named as Object's own properties are ports and bridges like any other", async (t) => {
  for (const name of ['constructor', 'toString', 'valueOf', 'hasOwnProperty']) {
    const c = parseConfig({ ports: [routed({ name }), port({ name: `${name}2`, socket: '/tmp/c.sock', bridge: name })], pipeline: ['routing'] }, '/', 2);
    t.same([c.ports[0].name, c.ports[0].addresses, c.bridges[name].addresses], [name, ['10.0.1.1/24'], []], `a port and a bridge named ${name}`);
  }
});

t.test('a MAC may repeat in different bridges; IPv6 on a 1280 link', async (t) => {
  const c = parseConfig({ ports: [port({ mac: '02:00:00:00:00:09', mtu: 1280 }), port({ name: 'c', socket: '/tmp/c.sock', bridge: 'br1', mac: '02:00:00:00:00:09' })], bridges: { br0: { addresses: ['2001:db8::1/64'] } }, pipeline: ['routing'] }, '/', 2);
  t.same(c.ports.map((p) => p.mac), ['02:00:00:00:00:09', '02:00:00:00:00:09']);
  t.equal(c.bridges.br0.mtu, 1280);
});

t.test('the admin token file: read by --check and at start, before anything starts; not at each parse', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-token-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'short'), 'abc\n');
  writeFileSync(join(dir, 'token'), 'a-token-of-twenty-chars\n');
  t.equal(readAdminToken(join(dir, 'token')), 'a-token-of-twenty-chars');
  t.throws(() => readAdminToken(join(dir, 'short')), { field: 'admin.tokenFile', message: /the token in .*short is shorter than 16 characters/ });
  t.throws(() => readAdminToken(join(dir, 'missing')), { field: 'admin.tokenFile', message: /cannot read .*missing: ENOENT/ });
  for (const [name, token] of [['lines', 'a-token-of-twenty\nchars-on-two-lines'], ['accented', 'a-token-of-twenty-chärs']]) {
    writeFileSync(join(dir, name), token);
    t.throws(() => readAdminToken(join(dir, name)), { field: 'admin.tokenFile', message: /cannot send in a header/ }, `a token with ${name}: refused`);
  }
  writeFileSync(join(dir, 'phrase'), 'a pass phrase of words\n');
  t.equal(readAdminToken(join(dir, 'phrase')), 'a pass phrase of words', 'spaces inside are taken');
  t.equal(parseConfig({ ports: [port()], admin: { listen: '127.0.0.1:9000', tokenFile: 'missing' } }, dir, 2).admin.tokenFile, join(dir, 'missing'), 'a parse alone does not read it');
  t.match(parseConfig({ ports: [port()] }, dir, 2).admin, { headersTimeoutMs: 10_000, stalledAnswerMs: 30_000 }, "the endpoint's limits: 10 s for a request's headers, 30 s for an answer nothing is read of");
  t.match(parseConfig({ ports: [port()], admin: { headersTimeout: 2.5, stalledAnswerTimeout: 600 } }, dir, 2).admin, { headersTimeoutMs: 2500, stalledAnswerMs: 600_000 }, 'or as the config says, in seconds');
  const file = join(dir, 'vrouter.json');
  writeFileSync(file, JSON.stringify({ ports: [{ name: 'a', socket: join(dir, 'a.sock'), bridge: 'br0' }], admin: { listen: '127.0.0.1:9', tokenFile: 'missing' } }));
  for (const flag of ['--check', '--config']) {
    const run = spawnSync(process.execPath, [VROUTER_BIN, flag, file], { encoding: 'utf8', timeout: 20000, env: daemonEnv() });
    t.equal(run.status, 2, `${flag}: status 2`);
    t.match(run.stderr, /invalid configuration: admin\.tokenFile: cannot read .*missing: ENOENT/, `${flag}: the field and why`);
  }
  t.notOk(existsSync(join(dir, 'a.sock')), 'no socket was created');
  const twice = join(dir, 'twice.json');
  writeFileSync(twice, `{"ports":[{"name":"a","socket":"${join(dir, 'a.sock')}","bridge":"br0"}],"pmd":{"cores":[1]},"ports":[]}`);
  const run = spawnSync(process.execPath, [VROUTER_BIN, '--check', twice], { encoding: 'utf8', timeout: 20000, env: daemonEnv() });
  t.equal(run.status, 2, 'a key given twice: status 2');
  t.match(run.stderr, /invalid configuration: ports: is given twice in one object \(JSON keeps only the last\)/, 'naming it');
});

t.test('a routed port\'s Linux mirror is a TAP port of its own; its namespace a route source', async (t) => {
  const c = parseConfig({ ports: [routed({ linuxMirror: { netns: 'lcp' }, mtu: 9000 }), routed({ name: 'b', socket: '/tmp/b.sock', addresses: ['10.0.2.1/24'] })], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: 'localhost:2620' }] }, '/', 2);
  t.same(c.ports.map((p) => p.name), ['a', 'a.linux', 'b'], 'the mirror follows its port');
  t.match(c.ports[1], { type: 'tap', interface: 'a', mtu: 9000, queues: 1, addresses: [], mirror: { of: 'a', netns: 'lcp', mac: c.ports[0].routerMac, addresses: ['10.0.1.1/24'] } });
  t.same(c.routeSources, [{ type: 'fpm', host: '127.0.0.1', port: 2620, peers: null }, { type: 'netlink', netns: 'lcp' }], 'the mirror\'s namespace is a route source, unless listed');
  const open = parseConfig({ ports: [routed()], pipeline: ['routing'], routeSources: [{ type: 'fpm', listen: '[::]:2620', peers: ['192.0.2.10', '2001:DB8:0:0::7'] }] }, '/', 2);
  t.same(open.routeSources, [{ type: 'fpm', host: '::', port: 2620, peers: ['192.0.2.10', '2001:db8::7'] }], 'a listen beyond loopback with the peers allowed, in canonical form');
  const learned = { routes: [], neighbours: [], addresses: { a: ['10.0.1.1/24', '10.0.1.9/24', 'nonsense'] } };
  const withLearned = parseConfig({ ports: [routed({ linuxMirror: { netns: 'lcp' } })], pipeline: ['routing'] }, '/', 2, learned);
  t.same(withLearned.ports[0].addresses, ['10.0.1.1/24', '10.0.1.9/24'], 'an address Linux has on the mirror is the port\'s too');
  t.same(withLearned.ports[1].mirror?.addresses, ['10.0.1.1/24'], 'but the mirror keeps the port\'s own (it is not made again)');
});

t.test('one schema: the config file, the admin bodies and the OpenAPI document', async (t) => {
  const { ConfigBody, PortBody } = await import('../../src/admin/schemas.ts');
  t.equal(ConfigBody, ConfigDocument, 'PUT /config takes the schema the file is checked against');
  t.equal(PortBody, ConfigDocument.properties.ports.items, 'POST /ports takes an entry of its "ports"');
  const undescribed: string[] = [];
  const walk = (node: Record<string, unknown>, at: string) => {
    for (const [key, child] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) {
      if (typeof child.description !== 'string') undescribed.push(`${at}${key}`);
      walk(child, `${at}${key}.`);
    }
    for (const child of [node.items, ...Object.values((node.patternProperties ?? {}) as object)]) if (child) walk(child as Record<string, unknown>, `${at}*.`);
  };
  walk(ConfigDocument as unknown as Record<string, unknown>, '');
  t.same(undescribed, [], 'every key says what it is for');
  const routes = [{ prefix: '0.0.0.0/0', via: '10.0.1.254' }];
  const c = parseConfig({ ports: [routed()], pipeline: ['routing'], routes }, '/', 2);
  t.same(c.plugins.find((p) => p.name === 'routing')?.config, { routes }, 'the built-ins\' top-level keys pass the schema to their plugin');
});

t.test('the daemon refuses a bad config before it starts anything', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'bad.json');
  writeFileSync(file, JSON.stringify({ ports: [{ name: 'a', socket: join(dir, 'a.sock'), mtu: 20000 }] }));
  const run = spawnSync(process.execPath, [VROUTER_BIN, '--config', file], { encoding: 'utf8', timeout: 20000, env: daemonEnv() });
  t.equal(run.status, 2, 'non-zero exit');
  t.match(run.stderr, /invalid configuration: ports\[0\]\.mtu: must be an integer from 68 to 9000, got 20000/);
  t.notOk(existsSync(join(dir, 'a.sock')), 'no socket was created');
  writeFileSync(file, '{"ports": [');
  const broken = spawnSync(process.execPath, [VROUTER_BIN, '--config', file], { encoding: 'utf8', timeout: 20000, env: daemonEnv() });
  t.equal(broken.status, 2);
  t.match(broken.stderr, /not valid JSON/);
});

t.test('a start that fails half-way (the admin endpoint cannot listen; a port path that is a directory) removes what it had made', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vrouter-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'c.json');
  // Valid, and refused only by the host: the admin socket's directory does not exist.
  writeFileSync(file, JSON.stringify({ ports: [{ name: 'a', socket: join(dir, 'a.sock'), bridge: 'br0' }], admin: { listen: `unix:${join(dir, 'none', 'admin.sock')}` } }));
  const run = spawnSync(process.execPath, [VROUTER_BIN, '--config', file], { encoding: 'utf8', timeout: 30000, env: daemonEnv() });
  t.match(run.stderr, /port a: listening on .*a\.sock/, 'the port had started');
  t.match(run.stderr, /cannot start: listen E[A-Z]+: .*admin\.sock/, 'the failure and why');
  t.equal(run.status, 1, 'status 1');
  t.notOk(existsSync(join(dir, 'a.sock')), "the port's socket is removed (a frontend would find it and be refused)");
  // The second port's path is a directory: the control thread fails after it opened the first.
  mkdirSync(join(dir, 'b.sock'));
  writeFileSync(file, JSON.stringify({ ports: [{ name: 'a', socket: join(dir, 'a.sock'), bridge: 'br0' }, { name: 'b', socket: join(dir, 'b.sock'), bridge: 'br0' }] }));
  const second = spawnSync(process.execPath, [VROUTER_BIN, '--config', file], { encoding: 'utf8', timeout: 30000, env: daemonEnv() });
  t.match(second.stderr, /cannot start: .*b\.sock exists and is not a socket/, 'the second port: the failure and why');
  t.equal(second.status, 1, 'status 1');
  t.notOk(existsSync(join(dir, 'a.sock')), "the first port's socket, opened before, is removed");
});

t.test('a tap port with several queues: an IFF_MULTI_QUEUE interface, its queues spread over the PMDs', async (t) => {
  const { assignQueues } = await import('../../src/control/port-slots.ts');
  const c = parseConfig({ ports: [{ name: 't', type: 'tap', interface: 'vr0', queues: 4, rxqAffinity: { 3: 2 } }], pmd: { cores: [2, 3] } }, '/', 4);
  t.match(c.ports[0], { type: 'tap', queues: 4, rxqAffinity: { 3: 2 } });
  t.same(assignQueues(c, ['t']), [[0, 1, 0, 0]], 'round-robin, queue 3 pinned to CPU 2 (PMD 0)');
});

t.test('queue pairs spread over PMDs round-robin, unless pinned', async (t) => {
  const { assignQueues } = await import('../../src/control/port-slots.ts');
  const c = parseConfig(
    { ports: [port({ queues: 2 }), port({ name: 'b', socket: '/tmp/b.sock', queues: 3, rxqAffinity: { 0: 3 } })], pmd: { cores: [2, 3] } },
    '/',
    4,
  );
  t.same(assignQueues(c, c.ports.map((p) => p.name)), [[0, 1], [1, 0, 1]], 'b queue 0 pinned to CPU 3 (PMD 1); the rest alternate');
});

t.test('the configs of config/ and examples/ are valid', async (t) => {
  const { loadConfigFile } = await import('../../src/control/config.ts');
  for (const file of ['config/default.json', 'examples/hardened.json', 'examples/two-guests/vrouter.json', 'examples/testpmd/vrouter.json', 'examples/three-subnets/vrouter.json', 'examples/systemd/vrouter.json']) {
    t.doesNotThrow(() => loadConfigFile(join(REPO, file)), file);
  }
  const hardened = loadConfigFile(join(REPO, 'examples/hardened.json'));
  t.same(
    hardened.ports.map((p) => [p.memoryPolicy, p.portSecurity, p.socketMode, p.peerUid]),
    [['strict', true, 0o660, 0], ['strict', false, 0o600, null]],
    'hardened.json sets what its README says',
  );
});
