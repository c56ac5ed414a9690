// Netlink requests acknowledged before the call returns (src/sys/netlink-request.ts),
// against the kernel of a network namespace of the test's: addresses made and replaced,
// IPv6 without DAD, and a refusal that names the request and the kernel's reason.
import { execFileSync } from 'node:child_process';
import t from 'tap';
import { addressRequest } from '../../src/sys/netlink.ts';
import { requestAll } from '../../src/sys/netlink-request.ts';

const NETNS = `vrnlr${process.pid}`;
const ip = (...args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const replace = (ifindex: number, address: string, prefixLength: number) => ({
  what: `RTM_NEWADDR ${address}/${prefixLength}`,
  build: (seq: number) => addressRequest('replace', { ifindex, address, prefixLength, noDad: address.includes(':') }, seq),
});

t.test('addresses replaced in a namespace through netlink, each acknowledged', async (t) => {
  ip('netns', 'add', NETNS);
  t.teardown(() => ip('netns', 'del', NETNS));
  ip('-n', NETNS, 'link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1');
  ip('-n', NETNS, 'link', 'set', 'd0', 'up');
  const ifindex = Number(/^(\d+):/.exec(ip('-n', NETNS, '-o', 'link', 'show', 'dev', 'd0'))![1]);
  const wanted = [replace(ifindex, '10.9.5.1', 24), replace(ifindex, '2001:db8:5::1', 64)];
  requestAll(NETNS, wanted);
  requestAll(NETNS, wanted);
  const addresses = JSON.parse(ip('-j', '-n', NETNS, 'address', 'show', 'dev', 'd0'))[0].addr_info as { local: string; prefixlen: number; tentative?: boolean }[];
  t.ok(addresses.some((a) => a.local === '10.9.5.1' && a.prefixlen === 24), 'the IPv4 address, once although asked for twice (replaced)');
  t.equal(addresses.filter((a) => a.local === '10.9.5.1').length, 1);
  const v6 = addresses.find((a) => a.local === '2001:db8:5::1');
  t.ok(v6 !== undefined && v6.prefixlen === 64, 'the IPv6 address');
  t.notOk(v6?.tentative, 'usable at once: no duplicate address detection');
  t.throws(() => requestAll(NETNS, [replace(ifindex + 1000, '10.9.6.1', 24)]), /RTM_NEWADDR 10\.9\.6\.1\/24 .*failed: ENODEV/, 'an interface that is not there: refused, naming the request and why');
  t.throws(() => requestAll('vr-no-such-netns', wanted), /no network namespace of that name/, 'a namespace that is not there');
});
