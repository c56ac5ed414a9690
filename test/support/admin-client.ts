// The admin endpoint of a vrouter started by a test, as a client sees it: undici over the
// UNIX socket next to the config (or TCP at `origin`), JSON in and out.
import { join } from 'node:path';
import { Agent, request } from 'undici';
import type { StartedVrouter } from './vrouter-process.ts';

export interface AdminClient {
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; json: any; text: string; headers: Record<string, string | string[] | undefined> }>;
  /** a GET whose answer is binary (a capture's pcapng) */
  bytes(path: string): Promise<{ status: number; bytes: Uint8Array }>;
}

export function adminClient(vr: StartedVrouter, origin = 'http://vrouter'): AdminClient {
  const dispatcher = origin === 'http://vrouter' ? new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } }) : undefined;
  return {
    async call(method, path, body, headers = {}) {
      const res = await request(`${origin}${path}`, {
        method: method as 'GET',
        dispatcher,
        headers: { 'content-type': 'application/json', ...headers },
        body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
      });
      const text = await res.body.text();
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, json, text, headers: res.headers };
    },
    async bytes(path) {
      const res = await request(`${origin}${path}`, { method: 'GET', dispatcher });
      return { status: res.statusCode, bytes: new Uint8Array(await res.body.arrayBuffer()) };
    },
  };
}

/**
 * A GET on the UNIX socket whose answer streams (a capture): resolves once the answer has
 * begun, so that what the test does from then on is in it; bytes() reads it to its end.
 */
export async function startStream(vr: StartedVrouter, path: string) {
  const dispatcher = new Agent({ connect: { socketPath: join(vr.dir, 'admin.sock') } });
  const res = await request(`http://vrouter${path}`, { dispatcher });
  return {
    status: res.statusCode,
    headers: res.headers,
    body: res.body,
    /** the whole stream, once it ends */
    async bytes(): Promise<Buffer> {
      return Buffer.from(await res.body.arrayBuffer());
    },
  };
}
