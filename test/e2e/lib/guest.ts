// A Linux guest under QEMU with virtio-net NICs on vhost-user sockets: the frontend
// vrouter exists for. The image comes from scripts/build-guest.sh (Debian kernel and
// busybox); the guest runs one script and reports on its serial console in VR-* lines.
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Nic {
  socket: string;
  /** A.B.C.D/P; the MAC defaults to 52:54 and the four bytes of the address */
  ip?: string;
  mac?: string;
  mtu?: number;
  queues?: number;
  /** the driver runs the queue pairs it picks (one per vCPU, at most `queues`) rather than all offered */
  driverPicksPairs?: boolean;
  /** QEMU listens on the socket and vrouter connects (a port in "client" mode) */
  server?: boolean;
  /** QEMU connects, and again this many seconds after the socket went away (chardev reconnect=) */
  reconnect?: number;
  /** more virtio-net-pci properties, e.g. "mrg_rxbuf=off" */
  props?: string[];
}

export interface GuestSpec {
  name: string;
  nics: Nic[];
  /** shell run in the guest, with the vr_* helpers of the image's /vr/lib.sh */
  script: string;
  timeoutS?: number;
  smp?: number;
  /** a QMP monitor on this UNIX socket path (see qmp()) */
  qmpSocket?: string;
  /** room for memory hotplug: DIMM slots and the most RAM the guest may grow to ("1G") */
  hotplug?: { slots: number; maxMem: string };
  /** a reset (QMP system_reset, the guest's reboot) boots the guest again instead of ending QEMU */
  reboots?: boolean;
}

export interface GuestResult {
  /** the script's exit status as the guest reported it; null if it never did */
  rc: number | null;
  /** VR-RESULT lines as key/value records */
  results: Record<string, string>[];
  console: string;
  qemuExit: number | null;
}

export interface RunningGuest {
  pid: number;
  done: Promise<GuestResult>;
  kill(): void;
  /** resolves once the console shows a line matching re (rejects after timeoutMs) */
  waitForConsole(re: RegExp, timeoutMs?: number): Promise<void>;
}

export const GUEST_DIR = join(process.env.VROUTER_CACHE ?? join(homedir(), '.cache/vrouter'), 'guest');

/** KVM only where the CPU shows vmx/svm: a paravirtual /dev/kvm cannot run stock kernels. */
function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return /\b(vmx|svm)\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}
const KVM = kvmUsable();

function macFor(nic: Nic, name: string, index: number): string {
  if (nic.mac) return nic.mac;
  if (nic.ip) return '52:54:' + nic.ip.split('/')[0].split('.').map((b) => Number(b).toString(16).padStart(2, '0')).join(':');
  const h = [...`${name}/${index}`].reduce((a, ch) => (a * 31 + ch.charCodeAt(0)) >>> 0, 7);
  return `52:55:${[24, 16, 8, 0].map((s) => ((h >>> s) & 255).toString(16).padStart(2, '0')).join(':')}`;
}

/**
 * Guest shell: a flow that must lose nothing while a test changes vrouter. `steadyPing`
 * starts one echo request to dst every 0.2 s in the background, each answered within 2 s
 * or lost, and says so on the console (VR-STEP steady-started); it runs until
 * `STEADY_PING_RESULT` stops it, between two requests (none is in flight then), and reports
 * `test=steady sent=N recv=M secs=S` (S: seconds it ran, as the guest's clock saw them).
 * So the flow spans every change made before the result is asked for, however long they
 * take, and no longer.
 */
export function steadyPing(dst: string): string {
  return `rm -f /tmp/steady-stop
( sent=0; recv=0; start=$(date +%s)
  while [ ! -e /tmp/steady-stop ]; do
    sent=$((sent + 1))
    ping -c 1 -W 2 ${dst} > /dev/null 2>&1 && recv=$((recv + 1))
    echo "$sent $recv $(( $(date +%s) - start ))" > /tmp/steady
    sleep 0.2
  done ) &
steady=$!
echo VR-STEP steady-started`;
}
export const STEADY_PING_RESULT = `touch /tmp/steady-stop
wait $steady
read sent recv secs < /tmp/steady
vr_result test=steady sent=$sent recv=$recv secs=$secs`;

/**
 * Shell for a guest: pings `dst` 20 times a second and prints each change between answered
 * and not as it happens: VR-STEP reached once it answers, then VR-STEP unrouted once it stops
 * (a probe is unanswered after 300 ms without a reply).
 */
export function reachProbe(dst: string): string {
  return `( ping -i 0.05 ${dst} 2>&1 & echo $! > /tmp/probe.pid; wait ) | {
  state=0
  while [ $state -lt 2 ]; do
    answered=0
    if read -t 0.3 line; then case "$line" in *"bytes from"*) answered=1 ;; PING*) continue ;; esac; fi
    case $state$answered in
      01) echo VR-STEP reached; state=1 ;;
      10) echo VR-STEP unrouted; state=2 ;;
    esac
  done
  kill $(cat /tmp/probe.pid)
}`;
}

export function bootGuest(spec: GuestSpec): RunningGuest {
  const kernel = join(GUEST_DIR, 'kernel');
  const initrd = join(GUEST_DIR, 'initrd.img');
  accessSync(kernel);
  accessSync(initrd);
  const work = mkdtempSync(join(tmpdir(), `vrouter-guest-${spec.name}-`));
  const consoleLog = join(work, 'console.log');
  writeFileSync(join(work, 'cmd.sh'), spec.script);
  const timeoutS = spec.timeoutS ?? 120;
  // cryptomgr.notests: the kernel's self-tests of its crypto algorithms take a sixth of a
  // boot under TCG (0.5 s of 3), and nothing here tests the guest's crypto.
  const append = ['console=ttyS0', 'panic=-1', 'quiet', 'cryptomgr.notests=1', `vr.name=${spec.name}`, `vr.timeout=${Math.max(10, timeoutS - 10)}`];
  const args = [
    '-name', `vrouter-${spec.name}`,
    '-machine', `pc,accel=${KVM ? 'kvm' : 'tcg'},memory-backend=mem0`,
    '-cpu', KVM ? 'host' : 'max', '-smp', String(spec.smp ?? 1), '-m', spec.hotplug ? `256M,slots=${spec.hotplug.slots},maxmem=${spec.hotplug.maxMem}` : '256M',
    // vhost-user needs guest RAM in a shared file the backend can map.
    '-object', 'memory-backend-memfd,id=mem0,size=256M,share=on',
    '-nodefaults', '-no-user-config', '-display', 'none', '-vga', 'none', ...(spec.reboots ? [] : ['-no-reboot']),
    '-serial', `file:${consoleLog}`,
    '-kernel', kernel, '-initrd', initrd,
    '-fw_cfg', `name=opt/vrouter/cmd,file=${join(work, 'cmd.sh')}`,
  ];
  spec.nics.forEach((nic, i) => {
    const queues = nic.queues ?? 1;
    args.push('-chardev', `socket,id=vhu${i},path=${nic.socket}${nic.server ? ',server=on,wait=off' : ''}${nic.reconnect ? `,reconnect=${nic.reconnect}` : ''}`);
    args.push('-netdev', `vhost-user,id=net${i},chardev=vhu${i}${queues > 1 ? `,queues=${queues}` : ''}`);
    // QEMU 7.2 crashes with vhost-user and MSI-X without KVM: legacy interrupts (vectors=0) then.
    const vectors = KVM ? 2 * queues + 2 : 0;
    const props = [`netdev=net${i}`, `mac=${macFor(nic, spec.name, i)}`, `vectors=${vectors}`];
    if (queues > 1) props.push('mq=on');
    if (nic.mtu) props.push(`host_mtu=${nic.mtu}`);
    args.push('-device', ['virtio-net-pci', ...props, ...(nic.props ?? [])].join(','));
    if (nic.ip) append.push(`vr.ip${i}=${nic.ip}`);
    if (nic.mtu) append.push(`vr.mtu${i}=${nic.mtu}`);
    if (queues > 1 && !nic.driverPicksPairs) append.push(`vr.q${i}=${queues}`);
  });
  if (spec.qmpSocket) args.push('-qmp', `unix:${spec.qmpSocket},server=on,wait=off`);
  args.push('-append', append.join(' '));
  const qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  qemu.stdout!.on('data', (d) => (output += d));
  qemu.stderr!.on('data', (d) => (output += d));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), timeoutS * 1000);
  // A wait looks again as QEMU writes the console (inotify on the guest's directory), not at
  // its next turn: tests time what a guest sees, and a look every 100 ms added up to 100 ms.
  const wakers = new Set<() => void>();
  const consoleWritten = watch(work, () => wakers.forEach((wake) => wake()));
  consoleWritten.unref();
  const done = new Promise<GuestResult>((resolve) => {
    qemu.on('exit', (code, signal) => {
      clearTimeout(timer);
      consoleWritten.close();
      let text = '';
      try {
        text = readFileSync(consoleLog, 'utf8');
      } catch {
        // QEMU failed before creating it
      }
      rmSync(work, { recursive: true, force: true });
      const exit = /^VR-EXIT vm=\S+ rc=(\d+)/m.exec(text);
      const results = [...text.matchAll(/^VR-RESULT (.*)$/gm)].map((m) => Object.fromEntries(m[1].trim().split(/\s+/).map((kv) => kv.split('=', 2) as [string, string])));
      // How QEMU ended, when the guest did not say it was done: killed at the timeout, or a crash.
      const ended = exit ? '' : `\n[qemu] exited: code ${code}, signal ${signal}`;
      resolve({ rc: exit ? Number(exit[1]) : null, results, console: text + (output ? `\n[qemu] ${output}` : '') + ended, qemuExit: code });
    });
  });
  let exited = false;
  const nextWrite = (atMostMs: number) =>
    new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        wakers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, atMostMs);
      wakers.add(wake);
    });
  void done.then(() => (exited = true));
  const waitForConsole = async (re: RegExp, timeoutMs = 60000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let text = '';
      try {
        text = readFileSync(consoleLog, 'utf8');
      } catch {
        // not written yet
      }
      if (re.test(text)) return;
      if (exited || Date.now() > deadline) throw new Error(`guest ${spec.name}: no ${re} on the console${exited ? ' (QEMU exited)' : ''}:\n${text}`);
      await nextWrite(100);
    }
  };
  return { pid: qemu.pid!, done, kill: () => qemu.kill('SIGKILL'), waitForConsole };
}

/** Whether QEMU and the guest image are there (the test fails with this reason if not). */
export function guestPrerequisites(): string | null {
  if (spawnSync('qemu-system-x86_64', ['--version']).status !== 0) return 'qemu-system-x86_64 is not installed (scripts/setup-peers.sh installs it)';
  try {
    accessSync(join(GUEST_DIR, 'kernel'));
    accessSync(join(GUEST_DIR, 'initrd.img'));
  } catch {
    return `no guest image in ${GUEST_DIR} (scripts/build-guest.sh builds it)`;
  }
  return null;
}

/**
 * Runs QMP commands one after the other on a guest's monitor socket (GuestSpec.qmpSocket)
 * and returns each one's "return"; throws on an "error" answer. Events are skipped.
 */
export async function qmp(socketPath: string, commands: { execute: string; arguments?: object }[], timeoutMs = 10000): Promise<unknown[]> {
  const deadline = Date.now() + timeoutMs;
  const sock = await new Promise<ReturnType<typeof connect>>((resolve, reject) => {
    const attempt = () => {
      const s = connect(socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', (err) => (Date.now() > deadline ? reject(err) : setTimeout(attempt, 100)));
    };
    attempt();
  });
  const answers: Record<string, unknown>[] = [];
  let waiting: (() => void) | null = null;
  let pending = '';
  sock.on('data', (d) => {
    pending += d.toString();
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      const msg = JSON.parse(pending.slice(0, nl)) as Record<string, unknown>;
      pending = pending.slice(nl + 1);
      if (!('event' in msg)) answers.push(msg);
      waiting?.();
    }
  });
  const next = async (): Promise<Record<string, unknown>> => {
    while (answers.length === 0) {
      if (Date.now() > deadline) throw new Error(`QMP on ${socketPath}: no answer within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        waiting = r;
        setTimeout(r, 100);
      });
    }
    return answers.shift()!;
  };
  try {
    await next(); // the greeting
    const results: unknown[] = [];
    for (const c of [{ execute: 'qmp_capabilities' }, ...commands]) {
      sock.write(JSON.stringify(c) + '\n');
      const answer = await next();
      if ('error' in answer) throw new Error(`QMP ${c.execute}: ${JSON.stringify(answer.error)}`);
      results.push(answer.return);
    }
    return results.slice(1);
  } finally {
    sock.destroy();
  }
}
