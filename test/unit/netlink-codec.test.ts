// The rtnetlink codec on messages built by hand: each kind of message the kernel and zebra
// send decodes to the event a consumer should see, requests have the kernel's layout, and
// a message that does not add up gives a 'malformed' event (naming what is wrong), never an
// exception or an endless loop, and costs nothing of the messages around it.
import { Address6 } from 'ip-address';
import t from 'tap';
import { formatAddress } from '../../src/pipeline/net.ts';
import { addressRequest, decodeMessages, dumpRequest, formatIp, type NetlinkEvent } from '../../src/sys/netlink.ts';
import { prng } from '../support/prng.ts';
import {
  AF_BRIDGE,
  AF_INET,
  AF_INET6,
  AF_MPLS,
  attr,
  concat,
  cstring,
  i32,
  ip,
  mac,
  message,
  NHA,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  routeMessage,
  RTA,
  rtmsg,
  rtnexthop,
  RTM_DELLINK,
  RTM_DELNEIGH,
  RTM_DELNEXTHOP,
  RTM_F_CLONED,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWNEXTHOP,
  RTM_NEWROUTE,
  RTM_NEWRULE,
  RTN,
  RTPROT_BGP,
  u16,
  u32,
  u8s,
} from '../support/netlink-messages.ts';

const decode = (...messages: Uint8Array[]) => decodeMessages(concat(...messages));
const only = (events: NetlinkEvent[]) => {
  if (events.length !== 1) throw new Error(`${events.length} events, one expected: ${JSON.stringify(events)}`);
  return events[0];
};

t.test('routes: prefix text, gateway, interface, metric, table, protocol, type', async (t) => {
  t.same(only(decode(routeMessage('add', { prefix: '10.1.0.0/16', gateway: '10.9.0.2', oif: 3, metric: 20, protocol: RTPROT_BGP }))), {
    kind: 'route', op: 'add', family: 4, prefix: '10.1.0.0/16', nexthops: [{ via: '10.9.0.2', ifindex: 3, weight: 1 }], nhid: null, metric: 20, table: 254, protocol: RTPROT_BGP, type: 'unicast',
  }, 'an IPv4 route through a gateway');
  t.same(only(decode(routeMessage('remove', { prefix: '2001:0db8:0000::/32', oif: 7, table: 252, tableAttr: 1000 }))), {
    kind: 'route', op: 'remove', family: 6, prefix: '2001:db8::/32', nexthops: [{ via: null, ifindex: 7, weight: 1 }], nhid: null, metric: 0, table: 1000, protocol: 4, type: 'unicast',
  }, 'an IPv6 route on an interface: canonical text, RTA_TABLE over rtm_table');
  const dflt = only(decode(routeMessage('add', { prefix: '0.0.0.0/0', gateway: '192.0.2.1' })));
  t.match(dflt, { prefix: '0.0.0.0/0', nexthops: [{ via: '192.0.2.1' }] }, 'a default route has no RTA_DST');
  t.match(only(decode(routeMessage('add', { prefix: '::/0', gateway: 'fe80::1', oif: 2 }))), { prefix: '::/0', family: 6, nexthops: [{ via: 'fe80::1', ifindex: 2 }] }, 'so has an IPv6 one');
  t.match(only(decode(routeMessage('add', { prefix: '10.1.2.3/16', dstLen: 16, oif: 1 }))), { prefix: '10.1.0.0/16' }, 'host bits (as FPM may send them) are cleared');
  t.match(only(decode(routeMessage('add', { prefix: '2001:db8:1:2::/63', oif: 1 }))), { prefix: '2001:db8:1:2::/63' }, 'a prefix not on a byte boundary');
  for (const [type, name] of [[RTN.BLACKHOLE, 'blackhole'], [RTN.UNREACHABLE, 'unreachable'], [RTN.PROHIBIT, 'prohibit'], [RTN.LOCAL, 'local'], [RTN.BROADCAST, 'broadcast'], [RTN.MULTICAST, 'multicast'], [RTN.THROW, 'other'], [RTN.ANYCAST, 'other'], [200, 'other']] as const) {
    t.match(only(decode(routeMessage('add', { prefix: '10.2.0.0/16', type }))), { type: name, nexthops: [] }, `rtm_type ${type} is '${name}'`);
  }
});

t.test('ECMP (RTA_MULTIPATH): each nexthop with its gateway, interface and weight', async (t) => {
  const ev = only(decode(routeMessage('add', { prefix: '10.11.0.0/16', multipath: [{ gateway: '10.9.0.2', ifindex: 2 }, { gateway: '10.9.0.3', ifindex: 2, weight: 3 }, { ifindex: 4 }] })));
  t.same(ev.kind === 'route' && ev.nexthops, [{ via: '10.9.0.2', ifindex: 2, weight: 1 }, { via: '10.9.0.3', ifindex: 2, weight: 3 }, { via: null, ifindex: 4, weight: 1 }]);
  const v6 = only(decode(routeMessage('add', { prefix: '2001:db8:100::/48', multipath: [{ gateway: 'fe80::1', ifindex: 2 }, { gateway: 'fe80::2', ifindex: 3, weight: 256 }] })));
  t.same(v6.kind === 'route' && v6.nexthops, [{ via: 'fe80::1', ifindex: 2, weight: 1 }, { via: 'fe80::2', ifindex: 3, weight: 256 }], 'IPv6, weights up to 256');
});

t.test('RFC 5549 (RTA_VIA) and nexthop objects (RTA_NH_ID, RTM_NEWNEXTHOP)', async (t) => {
  t.match(only(decode(routeMessage('add', { prefix: '10.20.0.0/16', via: 'fe80::5054:ff:fe00:1', oif: 5 }))), { family: 4, nexthops: [{ via: 'fe80::5054:ff:fe00:1', ifindex: 5 }] }, 'an IPv4 route through an IPv6 gateway (BGP unnumbered)');
  t.match(only(decode(routeMessage('add', { prefix: '10.21.0.0/16', multipath: [{ via: 'fe80::1', ifindex: 5 }, { via: 'fe80::2', ifindex: 6 }] }))), { nexthops: [{ via: 'fe80::1' }, { via: 'fe80::2' }] }, 'in a multipath route too');
  t.match(only(decode(routeMessage('add', { prefix: '10.22.0.0/16', nhid: 17 }))), { nexthops: [], nhid: 17 }, 'a route through nexthop object 17');

  const nh = (type: number, ...attrs: Uint8Array[]) => message(type, concat(u8s(AF_INET, 0, 0, 0), u32(0), ...attrs));
  t.same(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.ID, u32(17)), attr(NHA.GATEWAY, ip('10.9.0.2')), attr(NHA.OIF, u32(2))))), { kind: 'nexthop', op: 'add', id: 17, via: '10.9.0.2', ifindex: 2, blackhole: false, group: [] }, 'one gateway');
  t.same(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.ID, u32(18)), attr(NHA.GATEWAY, ip('fe80::1')), attr(NHA.OIF, u32(2))))), { kind: 'nexthop', op: 'add', id: 18, via: 'fe80::1', ifindex: 2, blackhole: false, group: [] }, 'an IPv6 gateway');
  const group = concat(u32(17), u8s(0, 0), u16(0), u32(18), u8s(4, 0), u16(0), u32(19), u8s(0xff, 0x01), u16(0));
  t.same(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.ID, u32(20)), attr(NHA.GROUP, group), attr(NHA.GROUP_TYPE, u16(0))))), { kind: 'nexthop', op: 'add', id: 20, via: null, ifindex: 0, blackhole: false, group: [{ id: 17, weight: 1 }, { id: 18, weight: 5 }, { id: 19, weight: 512 }] }, 'a group, weights with their high byte');
  t.same(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.ID, u32(21)), attr(NHA.BLACKHOLE)))), { kind: 'nexthop', op: 'add', id: 21, via: null, ifindex: 0, blackhole: true, group: [] }, 'a blackhole');
  t.match(only(decode(nh(RTM_DELNEXTHOP, attr(NHA.ID, u32(17))))), { kind: 'nexthop', op: 'remove', id: 17 }, 'removed');
  t.match(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.OIF, u32(2))))), { kind: 'malformed', reason: /RTM_NEWNEXTHOP .*no NHA_ID/ }, 'one without an id is malformed');
  t.match(only(decode(nh(RTM_NEWNEXTHOP, attr(NHA.ID, u32(22)), attr(NHA.GROUP, u8s(1, 0, 0, 0, 0, 0))))), { kind: 'malformed', reason: /NHA_GROUP of 6 bytes/ }, 'so is a group of a partial entry');
});

t.test('neighbours, addresses, links', async (t) => {
  const ndmsg = (family: number, ifindex: number, state: number, flags: number) => concat(u8s(family, 0), u16(0), i32(ifindex), u16(state), u8s(flags, 1));
  t.same(only(decode(message(RTM_NEWNEIGH, concat(ndmsg(AF_INET, 2, 0x80, 0), attr(1, ip('10.9.0.2')), attr(2, mac('52:54:00:00:00:02')))))), {
    kind: 'neighbour', op: 'add', family: 4, address: '10.9.0.2', mac: '52:54:00:00:00:02', ifindex: 2, state: 0x80, flags: 0,
  }, 'a permanent IPv4 neighbour');
  t.same(only(decode(message(RTM_DELNEIGH, concat(ndmsg(AF_INET6, 3, 0x20, 0x80), attr(1, ip('fe80::1')))))), {
    kind: 'neighbour', op: 'remove', family: 6, address: 'fe80::1', mac: null, ifindex: 3, state: 0x20, flags: 0x80,
  }, 'a failed IPv6 router neighbour without a link-layer address');
  t.same(decode(message(RTM_NEWNEIGH, concat(ndmsg(AF_BRIDGE, 3, 0x80, 2), attr(2, mac('52:54:00:00:00:09'))))), [], 'a bridge FDB entry is not a neighbour');

  const ifaddrmsg = (family: number, prefixLength: number, ifindex: number) => concat(u8s(family, prefixLength, 0x80, 0), u32(ifindex));
  t.same(only(decode(message(RTM_NEWADDR, concat(ifaddrmsg(AF_INET, 24, 2), attr(1, ip('10.9.0.1')), attr(2, ip('10.9.0.1')), attr(3, cstring('dummy0')))))), {
    kind: 'address', op: 'add', family: 4, address: '10.9.0.1', prefixLength: 24, ifindex: 2,
  }, 'an IPv4 address');
  t.match(only(decode(message(RTM_NEWADDR, concat(ifaddrmsg(AF_INET, 32, 2), attr(1, ip('10.9.9.9')), attr(2, ip('10.9.0.1')))))), { address: '10.9.0.1' }, 'a point-to-point one: the local end (IFA_LOCAL), not the peer');
  t.match(only(decode(message(RTM_NEWADDR, concat(ifaddrmsg(AF_INET6, 64, 2), attr(1, ip('2001:db8:0:0::1')))))), { family: 6, address: '2001:db8::1', prefixLength: 64 }, 'an IPv6 one (IFA_ADDRESS only)');
  const cacheinfo = (valid: number) => attr(6, concat(u32(valid), u32(valid), u32(0), u32(0)));
  t.same((only(decode(message(RTM_NEWADDR, concat(ifaddrmsg(AF_INET6, 64, 2), attr(1, ip('2001:db8::5')), cacheinfo(86400))))) as { expires?: boolean }).expires, true, 'one with a lifetime (SLAAC, DHCP) says it expires');
  t.notOk('expires' in only(decode(message(RTM_NEWADDR, concat(ifaddrmsg(AF_INET6, 64, 2), attr(1, ip('2001:db8::6')), cacheinfo(0xffffffff))))), 'one for good does not');

  const ifinfomsg = (family: number, ifindex: number, flags: number) => concat(u8s(family, 0), u16(1), i32(ifindex), u32(flags), u32(0));
  t.same(only(decode(message(RTM_NEWLINK, concat(ifinfomsg(0, 2, 0x10043), attr(3, cstring('dummy0')), attr(4, u32(1500)), attr(1, mac('52:54:00:ab:cd:ef')))))), {
    kind: 'link', op: 'add', ifindex: 2, name: 'dummy0', up: true, carrier: true, mac: '52:54:00:ab:cd:ef', mtu: 1500,
  }, 'a link up with carrier');
  t.same(only(decode(message(RTM_DELLINK, concat(ifinfomsg(0, 9, 0), attr(3, cstring('gre1')), attr(1, ip('192.0.2.1')))))), {
    kind: 'link', op: 'remove', ifindex: 9, name: 'gre1', up: false, carrier: false, mac: null, mtu: 0,
  }, 'removed; a 4-byte link-layer address is no MAC');
  t.same(decode(message(RTM_DELLINK, concat(ifinfomsg(AF_BRIDGE, 2, 0), attr(3, cstring('dummy0'))))), [], 'an AF_BRIDGE message (a port leaving its bridge) is not the link going');
});

t.test('what is not a route of vrouter\'s is skipped', async (t) => {
  t.same(decode(routeMessage('add', { prefix: '10.3.0.0/16', oif: 2, flags: RTM_F_CLONED })), [], 'a cloned route (PMTU exception)');
  t.same(decode(routeMessage('add', { prefix: '2001:db8:5::/48', srcLen: 64, oif: 2 })), [], 'a source-specific route');
  t.same(decode(message(RTM_NEWROUTE, concat(rtmsg({ family: AF_MPLS, dstLen: 20 }), attr(RTA.DST, u8s(0, 1, 0x41, 0))))), [], 'an MPLS route');
  t.same(decode(message(RTM_NEWROUTE, concat(rtmsg({ family: 128, dstLen: 32 }), attr(RTA.DST, ip('239.1.1.1'))))), [], 'a multicast routing cache entry (RTNL_FAMILY_IPMR)');
  t.same(decode(message(RTM_NEWRULE, new Uint8Array(12)), message(NLMSG_NOOP, new Uint8Array(0))), [], 'a rule, a NOOP');
});

t.test('control messages: DONE, ACK, error with extended ACK text, overrun', async (t) => {
  t.same(decode(message(NLMSG_DONE, i32(0), { seq: 7, flags: NLM_F_MULTI })), [{ kind: 'done', seq: 7, errno: 0, interrupted: false }], 'a dump done');
  t.same(decode(message(NLMSG_DONE, i32(0), { seq: 8, flags: NLM_F_MULTI | NLM_F_DUMP_INTR })), [{ kind: 'done', seq: 8, errno: 0, interrupted: true }], 'a dump done but interrupted');
  t.same(decode(message(NLMSG_DONE, i32(-95), { seq: 9 })), [{ kind: 'done', seq: 9, errno: 95, interrupted: false }], 'a dump failed');
  const request = message(RTM_NEWADDR, new Uint8Array(8), { seq: 10 });
  t.same(decode(message(NLMSG_ERROR, concat(i32(0), request), { seq: 10 })), [{ kind: 'ack', seq: 10, errno: 0, message: null }], 'an ACK quoting the whole request');
  const text = attr(1, cstring('Nexthop has invalid gateway'));
  t.same(decode(message(NLMSG_ERROR, concat(i32(-22), request.subarray(0, 16), text), { seq: 11, flags: NLM_F_CAPPED | NLM_F_ACK_TLVS })), [{ kind: 'ack', seq: 11, errno: 22, message: 'Nexthop has invalid gateway' }], 'an error, capped, with the kernel\'s text');
  t.same(decode(message(NLMSG_ERROR, concat(i32(-17), request, text), { seq: 12, flags: NLM_F_ACK_TLVS })), [{ kind: 'ack', seq: 12, errno: 17, message: 'Nexthop has invalid gateway' }], 'the text after a whole quoted request');
  t.same(decode(message(NLMSG_ERROR, concat(i32(-17), request.subarray(0, 16), attr(1, cstring('x'), 60)), { seq: 13, flags: NLM_F_CAPPED | NLM_F_ACK_TLVS })), [{ kind: 'ack', seq: 13, errno: 17, message: null }], 'text that does not add up costs the text, not the error');
  t.match(decode(message(NLMSG_ERROR, i32(-17), { seq: 14 })), [{ kind: 'malformed', reason: /NLMSG_ERROR .*needs 20/ }], 'an error without the quoted header is malformed');
  t.same(decode(message(NLMSG_OVERRUN, new Uint8Array(0), { seq: 3 })), [{ kind: 'overrun', seq: 3 }], 'an overrun');
});

t.test('several messages in one buffer, in order', async (t) => {
  const events = decode(routeMessage('add', { prefix: '10.1.0.0/16', oif: 1 }, { flags: NLM_F_MULTI, seq: 5 }), routeMessage('add', { prefix: '10.2.0.0/16', oif: 1 }, { flags: NLM_F_MULTI, seq: 5 }), message(NLMSG_DONE, i32(0), { seq: 5 }));
  t.same(events.map((e) => (e.kind === 'route' ? e.prefix : e.kind)), ['10.1.0.0/16', '10.2.0.0/16', 'done']);
});

t.test('malformed messages: a clear reason, no exception, and the messages around them still count', async (t) => {
  const good = routeMessage('add', { prefix: '10.1.0.0/16', oif: 1 });
  const kinds = (events: NetlinkEvent[]) => events.map((e) => (e.kind === 'malformed' ? `malformed: ${e.reason}` : e.kind));
  const cases: [string, Uint8Array, RegExp[]][] = [
    ['a truncated header', concat(good, good.subarray(0, 10)), [/^route$/, /10 bytes at offset 44: too short for a netlink header/]],
    ['nlmsg_len under 16', concat(good, message(RTM_NEWROUTE, rtmsg({}), { length: 8 }), good), [/^route$/, /nlmsg_len 8 is under the 16 of its header/]],
    ['nlmsg_len 0 (the loop must still end)', message(RTM_NEWROUTE, rtmsg({}), { length: 0 }), [/nlmsg_len 0 is under/]],
    ['nlmsg_len past the end', concat(good, message(RTM_NEWROUTE, rtmsg({}), { length: 400 })), [/^route$/, /nlmsg_len 400 is past the end of the 28 bytes left/]],
    ['a body too short for struct rtmsg', concat(message(RTM_NEWROUTE, u8s(2, 16, 0, 0)), good), [/RTM_NEWROUTE at offset 0: 4 bytes where struct rtmsg needs 12/, /^route$/]],
    ['an attribute of length 0', concat(message(RTM_NEWROUTE, concat(rtmsg({ dstLen: 16 }), u16(0), u16(RTA.DST), ip('10.1.0.0'))), good), [/route attribute 1 has length 0 \(at least 4\)/, /^route$/]],
    ['an attribute of length 3', concat(message(RTM_NEWROUTE, concat(rtmsg({}), u16(3), u16(RTA.OIF), u32(1))), good), [/attribute 4 has length 3/, /^route$/]],
    ['an attribute past the end', concat(message(RTM_NEWROUTE, concat(rtmsg({ dstLen: 16 }), attr(RTA.DST, ip('10.1.0.0'), 64))), good), [/route attribute 1 of 64 bytes runs 56 bytes past the end/, /^route$/]],
    ['RTA_DST of the wrong size', message(RTM_NEWROUTE, concat(rtmsg({ dstLen: 16 }), attr(RTA.DST, u8s(10, 1)))), [/RTA_DST of 2 bytes in an IPv4 route/]],
    ['a prefix length past 32', message(RTM_NEWROUTE, concat(rtmsg({ dstLen: 33 }), attr(RTA.DST, ip('10.1.0.0')))), [/rtm_dst_len 33 in an IPv4 route/]],
    ['an IPv6 gateway on an IPv4 route without RTA_VIA', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.GATEWAY, ip('fe80::1')) }), [/RTA_GATEWAY of 16 bytes in an IPv4 message/]],
    ['RTA_PRIORITY of 2 bytes', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.PRIORITY, u16(5)) }), [/attribute 6 has 2 bytes, 4 needed/]],
    ['RTA_VIA of an unknown family', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.VIA, concat(u16(99), ip('fe80::1'))) }), [/RTA_VIA of address family 99/]],
    ['RTA_VIA cut short', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.VIA, concat(u16(AF_INET6), ip('10.0.0.1'))) }), [/RTA_VIA with an IPv6 address of 4 bytes/]],
    ['a multipath entry with rtnh_len 0', routeMessage('add', { prefix: '10.1.0.0/16', multipath: [{ gateway: '10.9.0.2', length: 0 }] }), [/rtnh_len 0 in RTA_MULTIPATH: must be 8\.\.16/]],
    ['a multipath entry with rtnh_len 4', routeMessage('add', { prefix: '10.1.0.0/16', multipath: [{ gateway: '10.9.0.2', ifindex: 1 }, { length: 4 }] }), [/rtnh_len 4 in RTA_MULTIPATH/]],
    ['a multipath entry past the end', routeMessage('add', { prefix: '10.1.0.0/16', multipath: [{ gateway: '10.9.0.2', length: 200 }] }), [/rtnh_len 200 in RTA_MULTIPATH: must be 8\.\.16/]],
    ['a multipath entry cut short', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.MULTIPATH, concat(rtnexthop({ ifindex: 1 }), u8s(8, 0, 0, 0))) }), [/4 bytes left in RTA_MULTIPATH, too few for a struct rtnexthop/]],
    ['a multipath gateway attribute past its entry', routeMessage('add', { prefix: '10.1.0.0/16', extra: attr(RTA.MULTIPATH, concat(u16(12), u8s(0, 0), i32(1), attr(RTA.GATEWAY, ip('10.9.0.2')))) }), [/nexthop attribute 5 of 8 bytes runs 4 bytes past the end/]],
    ['a neighbour without NDA_DST', message(RTM_NEWNEIGH, concat(u8s(AF_INET, 0), u16(0), i32(2), u16(2), u8s(0, 1))), [/RTM_NEWNEIGH .*no NDA_DST/]],
    ['an address without one', message(RTM_NEWADDR, concat(u8s(AF_INET, 24, 0, 0), u32(2))), [/neither IFA_LOCAL nor IFA_ADDRESS/]],
    ['an IPv6 address past /128', message(RTM_NEWADDR, concat(u8s(AF_INET6, 129, 0, 0), u32(2), attr(1, ip('fe80::1')))), [/ifa_prefixlen 129/]],
    ['a link message cut short', message(RTM_NEWLINK, new Uint8Array(8)), [/8 bytes where struct ifinfomsg needs 16/]],
    ['a nexthop message with NHA_ID cut short', message(RTM_DELNEXTHOP, concat(new Uint8Array(8), attr(NHA.ID, u16(1)))), [/attribute 1 has 2 bytes, 4 needed/]],
  ];
  for (const [what, bytes, expected] of cases) {
    let events: NetlinkEvent[] = [];
    t.doesNotThrow(() => (events = decodeMessages(bytes)), `${what}: no exception`);
    const got = kinds(events);
    t.equal(got.length, expected.length, `${what}: ${expected.length} event(s): ${JSON.stringify(got)}`);
    expected.forEach((re, i) => t.match(got[i], re, `${what}: event ${i + 1}`));
  }
});

t.test('random damage to valid messages never throws and never loops', async (t) => {
  const samples = [
    routeMessage('add', { prefix: '10.11.0.0/16', multipath: [{ gateway: '10.9.0.2', ifindex: 2 }, { via: 'fe80::1', ifindex: 3 }], metric: 5, tableAttr: 10 }),
    routeMessage('remove', { prefix: '2001:db8::/32', gateway: 'fe80::1', oif: 2, nhid: 3 }),
    message(RTM_NEWNEXTHOP, concat(u8s(AF_INET, 0, 0, 0), u32(0), attr(NHA.ID, u32(20)), attr(NHA.GROUP, concat(u32(17), u32(0))))),
    message(RTM_NEWLINK, concat(u8s(0, 0), u16(1), i32(2), u32(1), u32(0), attr(3, cstring('dummy0')), attr(4, u32(1500)))),
    message(NLMSG_ERROR, concat(i32(-22), new Uint8Array(16), attr(1, cstring('bad'))), { flags: NLM_F_CAPPED | NLM_F_ACK_TLVS }),
  ];
  const next = prng(0x5eed);
  const rand = () => next() / 2 ** 32;
  let decoded = 0;
  let malformed = 0;
  for (let i = 0; i < 20000; i++) {
    const a = samples[Math.floor(rand() * samples.length)];
    const bytes = concat(a, samples[Math.floor(rand() * samples.length)]);
    const flips = 1 + Math.floor(rand() * 4);
    for (let f = 0; f < flips; f++) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
    const cut = rand() < 0.3 ? Math.floor(rand() * bytes.length) : bytes.length;
    let events: NetlinkEvent[];
    try {
      events = decodeMessages(bytes.subarray(0, cut));
    } catch (err) {
      t.fail(`threw on ${Buffer.from(bytes.subarray(0, cut)).toString('hex')}: ${(err as Error).message}`);
      return;
    }
    if (events.some((e) => e.kind === 'malformed' && /decoder error/.test(e.reason))) {
      t.fail(`a check is missing: ${JSON.stringify(events)} from ${Buffer.from(bytes.subarray(0, cut)).toString('hex')}`);
      return;
    }
    decoded += events.length;
    malformed += events.filter((e) => e.kind === 'malformed').length;
  }
  t.ok(decoded > 0 && malformed > 0, `20,000 damaged buffers: ${decoded} events, ${malformed} of them malformed, no exception, no check missing`);
});

t.test('requests: dumps and address changes have the kernel\'s layout', async (t) => {
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  // nlmsg_len 28, RTM_GETROUTE (26), NLM_F_REQUEST | NLM_F_DUMP (0x301), seq 7, pid 0, then struct rtmsg with rtm_family AF_INET6.
  t.equal(hex(dumpRequest('route', 6, 7)), '1c000000' + '1a00' + '0103' + '07000000' + '00000000' + '0a' + '00'.repeat(11), 'RTM_GETROUTE, IPv6');
  t.equal(hex(dumpRequest('link', null, 1)), '20000000' + '1200' + '0103' + '01000000' + '00000000' + '00'.repeat(16), 'RTM_GETLINK: struct ifinfomsg, any family');
  t.equal(hex(dumpRequest('address', 4, 2)), '18000000' + '1600' + '0103' + '02000000' + '00000000' + '02' + '00'.repeat(7), 'RTM_GETADDR: struct ifaddrmsg, AF_INET');
  t.equal(hex(dumpRequest('neighbour', null, 3)).slice(0, 16), '1c000000' + '1e00' + '0103', 'RTM_GETNEIGH: struct ndmsg');
  t.equal(hex(dumpRequest('nexthop', null, 4)).slice(0, 16), '18000000' + '6a00' + '0103', 'RTM_GETNEXTHOP: struct nhmsg');

  const add = addressRequest('add', { ifindex: 3, address: '10.9.0.5', prefixLength: 24 }, 9);
  // RTM_NEWADDR (20), NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE (0x605); ifaddrmsg AF_INET /24 on 3; IFA_LOCAL, IFA_ADDRESS.
  t.equal(hex(add), '28000000' + '1400' + '0506' + '09000000' + '00000000' + '02180000' + '03000000' + '08000200' + '0a090005' + '08000100' + '0a090005');
  const del = addressRequest('remove', { ifindex: 3, address: '2001:db8::5', prefixLength: 64 }, 10);
  t.equal(hex(del.subarray(0, 24)), '40000000' + '1500' + '0500' + '0a000000' + '00000000' + '0a400000' + '03000000', 'RTM_DELADDR, IPv6, with an ACK asked for');
  t.same(decodeMessages(del), [{ kind: 'address', op: 'remove', family: 6, address: '2001:db8::5', prefixLength: 64, ifindex: 3 }], 'and it decodes back to what it asks');
  const replace = addressRequest('replace', { ifindex: 3, address: '2001:db8::1', prefixLength: 64, noDad: true }, 11);
  // RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE | NLM_F_CREATE (0x505); ifaddrmsg AF_INET6 /64, ifa_flags IFA_F_NODAD.
  t.equal(hex(replace.subarray(0, 24)), '40000000' + '1400' + '0505' + '0b000000' + '00000000' + '0a400200' + '03000000', 'RTM_NEWADDR replacing, IPv6 without DAD');
  t.throws(() => addressRequest('add', { ifindex: 3, address: '10.9.0.300', prefixLength: 24 }, 1), /"10\.9\.0\.300" is not an IPv4 or IPv6 address/);
  t.throws(() => addressRequest('add', { ifindex: 3, address: '10.9.0.1', prefixLength: 33 }, 1), /prefix length 33: must be 0\.\.32/);
  t.throws(() => addressRequest('add', { ifindex: 0, address: '10.9.0.1', prefixLength: 24 }, 1), /interface index 0/);
});

t.test('address text is the one the rest of vrouter writes (formatAddress, ip-address correctForm)', async (t) => {
  const edge = ['::', '::1', '1::', '2001:db8::', '2001:db8:0:0:1:0:0:1', '2001:0:0:1:0:0:0:1', '0:0:1:0:0:1:0:0', 'fe80::5054:ff:fe00:1', '::ffff:10.0.0.1', '1:2:3:4:5:6:7:8', '1:0:2:0:3:0:4:0', '0:1:2:3:4:5:6:0'];
  const next = prng(42);
  const rand = () => next() / 2 ** 32;
  const random = Array.from({ length: 2000 }, () => {
    // mostly zero groups, to exercise the choice of run
    const groups = Array.from({ length: 8 }, () => (rand() < 0.5 ? 0 : Math.floor(rand() * 65536)));
    return groups.map((g) => g.toString(16)).join(':');
  });
  let checked = 0;
  for (const text of [...edge, ...random]) {
    const bytes = ip(text);
    const ours = formatIp(bytes);
    if (ours !== formatAddress(bytes) || ours !== new Address6(text).correctForm()) {
      t.fail(`${text}: ours ${ours}, formatAddress ${formatAddress(bytes)}, correctForm ${new Address6(text).correctForm()}`);
      return;
    }
    checked++;
  }
  t.equal(formatIp(ip('10.0.0.255')), '10.0.0.255', 'IPv4 dotted quad');
  t.equal(checked, edge.length + random.length, `${checked} IPv6 addresses written alike`);
});
