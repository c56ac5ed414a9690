// The runnable examples as an operator runs them (examples/README.md): each run.sh from the
// project root, its output checked for what its README promises. They use the dist/ that
// `npm test` built, and fixed socket paths of their own.
import t from 'tap';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { testpmdPrerequisite } from './lib/testpmd.ts';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Runs `bash script args` from the project root: its exit status and output, or a failure after `timeoutMs`. */
function run(script: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [script, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => {
      out += `\n(killed after ${timeoutMs} ms)`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // gone already
      }
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

t.test('two-guests: vm1 pings vm2 through the bridge, and vrouter prints its counters', async (t) => {
  const { code, out } = await run('examples/two-guests/run.sh', [], 120_000);
  t.equal(code, 0, 'the script ends well', { out });
  t.match(out, /VR-RESULT vm=vm1 test=ping dst=10\.0\.0\.2 size=56 sent=5 recv=5 loss_pct=0/, 'every ping answered');
  const stats = /vrouter: stats (\{.*\})/.exec(out);
  t.ok(stats, 'the counters line printed', { out });
  const ports = JSON.parse(stats![1]).ports as Record<string, { rx_packets: number; tx_packets: number }>;
  t.ok(ports.vm1.rx_packets >= 5 && ports.vm2.rx_packets >= 5, `both ports received (vm1 ${ports.vm1.rx_packets}, vm2 ${ports.vm2.rx_packets})`);
});

t.test('three-subnets: pings and traceroutes across three subnets, IPv4 and IPv6, and path MTU from 9000 to 1500', async (t) => {
  const { code, out } = await run('examples/three-subnets/run.sh', [], 180_000);
  t.equal(code, 0, 'the script ends well', { out });
  for (const dst of ['10.0.2.2', '10.0.3.2', '10.0.3.3', '192.0.2.1', '2001:db8:2::2']) {
    t.match(out, new RegExp(`VR-RESULT vm=vm-a test=ping dst=${dst.replace(/\./g, '\\.')} size=56 sent=(\\d+) recv=\\1 loss_pct=0`), `vm-a reaches ${dst}: every ping answered`);
  }
  t.match(out, /traceroute to 10\.0\.2\.2[^\n]*\n\s*1\s+10\.0\.1\.1\s[^\n]*\n\s*2\s+10\.0\.2\.2\s/, 'traceroute: the router, then vm-b');
  t.match(out, /traceroute to 2001:db8:2::2[^\n]*\n\s*1\s+2001:db8:1::1\s[^\n]*\n\s*2\s+2001:db8:2::2\s/, 'traceroute6: the router, then vm-b');
  t.match(out, /traceroute to 198\.51\.100\.1[^\n]*\n\s*1\s+10\.0\.1\.1\s+[\d.]+ ms !N/, 'a destination with no route: network unreachable from the router');
  // 8000-byte pings from the 9000-byte port to the 1500 one: the first may go to path MTU
  // discovery ("fragmentation needed" back), the others arrive in fragments.
  const big = /VR-RESULT vm=vm-b test=ping dst=10\.0\.1\.2 size=8000 sent=3 recv=(\d)/.exec(out);
  t.ok(big !== null && Number(big[1]) >= 2, `8000-byte pings across the MTU step answered (${big?.[1] ?? 'none'} of 3)`, { out });
});

t.test('testpmd: flowgen through vrouter both ways, and both sides\' counts printed', async (t) => {
  const missing = testpmdPrerequisite();
  if (missing) return t.fail(`cannot run dpdk-testpmd: ${missing}`);
  const { code, out } = await run('examples/testpmd/run.sh', ['2'], 90_000);
  t.equal(code, 0, 'the script ends well', { out });
  // `show port stats all`: a block per port, its RX-packets first.
  const received = [...out.matchAll(/NIC statistics for port \d[\s\S]*?RX-packets:\s+(\d+)/g)].map((m) => Number(m[1]));
  t.equal(received.length, 2, 'testpmd printed both ports\' counts', { out });
  t.ok(received.every((n) => n > 10_000), `each port received frames through vrouter: ${received.join(', ')}`);
  t.match(out, /vrouter: stats \{/, 'and vrouter its counters');
});
