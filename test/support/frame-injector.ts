// Raw Ethernet frames sent into a link from a network namespace of the test's, as a host
// there would: test/support/inject-frames.py on a raw packet socket, fed a file of frames
// (GSO super-frames with their virtio_net_hdr on a PACKET_VNET_HDR socket).
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './traffic.ts';

const INJECT = fileURLToPath(new URL('./inject-frames.py', import.meta.url));

/** A frame to send, and the GSO header it goes with (a super-frame), if any. */
export interface Outgoing {
  frame: Uint8Array;
  /** struct virtio_net_hdr (VIRTIO 1.2, 5.1.6): sent on a PACKET_VNET_HDR socket */
  gsoSize?: number;
}

/** virtio_net_hdr for a TCP/IPv4 super-frame: NEEDS_CSUM, GSO_TCPV4, checksum at 34 + 16. */
function vnetHeader(frame: Uint8Array, gsoSize: number): Uint8Array {
  const h = new Uint8Array(10);
  const dv = new DataView(h.buffer);
  h[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
  h[1] = 1; // VIRTIO_NET_HDR_GSO_TCPV4
  const ihl = (frame[14] & 15) * 4;
  dv.setUint16(2, 14 + ihl + 20, true); // hdr_len
  dv.setUint16(4, gsoSize, true);
  dv.setUint16(6, 14 + ihl, true); // csum_start
  dv.setUint16(8, 16, true); // csum_offset: TCP's checksum field
  return h;
}

/** The injector's file: per frame a flags byte, a u32 length, the bytes. */
export function framesFile(dir: string, name: string, frames: readonly Outgoing[]): string {
  let size = 0;
  for (const f of frames) size += 5 + f.frame.length + (f.gsoSize === undefined ? 0 : 10);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  let at = 0;
  for (const f of frames) {
    const body = f.gsoSize === undefined ? f.frame : Uint8Array.from([...vnetHeader(f.frame, f.gsoSize), ...f.frame]);
    out[at] = f.gsoSize === undefined ? 0 : 1;
    dv.setUint32(at + 1, body.length, true);
    out.set(body, at + 5);
    at += 5 + body.length;
  }
  const path = join(dir, name);
  writeFileSync(path, out);
  return path;
}

export interface Injected {
  sent: number;
  failed: Record<string, number>;
  seconds: number;
  each?: string[];
}

/** Sends the frames out of `iface` in namespace `ns`, from a raw packet socket there, as fast as it goes. */
export function inject(ns: string, iface: string, file: string, each = false): Promise<Injected> {
  return new Promise((resolve, reject) =>
    execFile('ip', ['netns', 'exec', ns, 'python3', INJECT, iface, file, ...(each ? ['--each'] : [])], { timeout: 60_000, maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
      err ? reject(new Error(`the injector failed: ${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout) as Injected),
    ),
  );
}

/**
 * Sends the frames as inject() does while process `pid` (vrouter's data plane) is stopped:
 * a PMD that falls behind, for the few tens of ms the sending takes (the supervisor takes a
 * PMD that misses its heartbeat for 1 s for stuck). The process is continued whatever happens.
 */
export async function injectWhileStopped(ns: string, iface: string, file: string, pid: number): Promise<Injected> {
  const child = spawn('ip', ['netns', 'exec', ns, 'python3', INJECT, iface, file, '--wait'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  child.stdin.on('error', () => undefined); // an injector gone early: its exit code tells
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    await Promise.race([waitFor('the injector ready', () => out.startsWith('ready\n') || undefined, 20_000), exited]);
    process.kill(pid, 'SIGSTOP');
    child.stdin.end('go\n');
    const code = await exited;
    if (code !== 0) throw new Error(`the injector failed (${code}): ${err}`);
  } finally {
    process.kill(pid, 'SIGCONT');
    clearTimeout(timer);
  }
  return JSON.parse(out.slice('ready\n'.length)) as Injected;
}
