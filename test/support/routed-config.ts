// A routed vrouter's config that the admin endpoint's and vrouterctl's tests share: two L3
// ports, a bridge of two, and a stage of each built-in with an entry each ({dir}: the test's
// directory, see startVrouter).
export const ROUTED = {
  ports: [
    { name: 'a', socket: '{dir}/a.sock', addresses: ['10.0.1.1/24', '2001:db8:1::1/64'] },
    { name: 'b', socket: '{dir}/b.sock', addresses: ['10.0.2.1/24'] },
    { name: 'c', socket: '{dir}/c.sock', bridge: 'br0' },
    { name: 'd', socket: '{dir}/d.sock', bridge: 'br0' },
  ],
  pmd: { cores: [1] },
  pipeline: ['routing', 'acl', 'ratelimit'],
  routes: [{ prefix: '192.0.2.0/24', via: '10.0.2.2' }],
  acl: [{ action: 'deny', protocol: 'tcp', dstPort: 23 }],
  policers: [{ name: 'p', cir: '100mbit', apply: [{ inPort: 'a' }] }],
};
