// The admin endpoint as vrouterctl calls it: undici over the UNIX socket or TCP, the bearer
// token with every request but a GET and with captures (what the endpoint asks it for), the
// endpoint's refusals ({"error": {"code", "field", "message"}}) as RefusedError, and a
// daemon that cannot be reached as UnreachableError saying why.
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { TOKEN_ENV, type Target } from './target.ts';
import { unreachableMessage } from './unreachable.ts';

/** The endpoint answered with an error: exit status 1. */
export class RefusedError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string;
  /** the endpoint's body, as sent (printed as it is with --json) */
  readonly body: string;
  constructor(status: number, code: string, field: string, message: string, body: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
    this.body = body;
  }
}

/** The daemon did not answer (not running, no access, gone mid-request): exit status 3. */
export class UnreachableError extends Error {
  readonly code = 'VR_UNREACHABLE';
}

export interface Answer {
  status: number;
  /** the body as sent: --json prints it unchanged */
  text: string;
  /** the body parsed, when it is JSON */
  json: unknown;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

// A reload that restarts PMDs on new plugin versions answers after they are back.
const HEADERS_TIMEOUT_MS = 120_000;
const CONNECT_TIMEOUT_MS = 5_000;

export class AdminClient {
  private readonly dispatcher: Agent;
  private readonly origin: string;
  private readonly target: Target;
  private readonly token: () => string | null;

  /** token: read when the first request that needs it is sent (GETs need none) */
  constructor(target: Target, token: () => string | null) {
    this.target = target;
    this.token = token;
    this.origin = target.kind === 'unix' ? 'http://vrouter' : target.origin;
    this.dispatcher = new Agent({
      connect: target.kind === 'unix' ? { socketPath: target.path, timeout: CONNECT_TIMEOUT_MS } : { timeout: CONNECT_TIMEOUT_MS },
      headersTimeout: HEADERS_TIMEOUT_MS,
    });
  }

  get(path: string): Promise<Answer> {
    return this.call('GET', path);
  }

  /** A GET whose answer is text, not JSON (/metrics). */
  getText(path: string): Promise<Answer> {
    return this.call('GET', path, undefined, false);
  }

  post(path: string, body?: unknown): Promise<Answer> {
    return this.call('POST', path, body);
  }

  put(path: string, body: unknown): Promise<Answer> {
    return this.call('PUT', path, body);
  }

  delete(path: string): Promise<Answer> {
    return this.call('DELETE', path);
  }

  /**
   * A GET whose answer is a stream (a capture), with the token: the endpoint asks it for
   * reads that show guests' traffic. Resolves once the answer has begun.
   */
  async stream(path: string): Promise<Readable> {
    const headers: Record<string, string> = {};
    const token = this.token();
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let res;
    try {
      res = await request(`${this.origin}${path}`, { method: 'GET', dispatcher: this.dispatcher, headers });
    } catch (err) {
      throw new UnreachableError(unreachableMessage(this.target, err as NodeJS.ErrnoException));
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text();
      throw refusal(res.statusCode, String(res.headers['content-type'] ?? '').startsWith('application/json') ? parse(text) : undefined, text, true);
    }
    return res.body;
  }

  /** Closes the kept-alive connection, so that the process can exit at once. */
  async close(): Promise<void> {
    if (!this.aborted) await this.dispatcher.close();
  }

  private aborted = false;

  /** Ends the requests under way at once (Ctrl-C on a slow answer): they fail, and close() does not wait for them. */
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    this.dispatcher.destroy().catch(() => undefined);
  }

  private async call(method: Method, path: string, body?: unknown, wantsJson = true): Promise<Answer> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method !== 'GET') {
      const token = this.token();
      if (token !== null) headers.authorization = `Bearer ${token}`;
    }
    let status: number;
    let text: string;
    let contentType: string;
    try {
      const res = await request(`${this.origin}${path}`, { method, dispatcher: this.dispatcher, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      status = res.statusCode;
      contentType = String(res.headers['content-type'] ?? '');
      text = await res.body.text();
    } catch (err) {
      throw new UnreachableError(unreachableMessage(this.target, err as NodeJS.ErrnoException));
    }
    const json = contentType.startsWith('application/json') ? parse(text) : undefined;
    if (status >= 400) throw refusal(status, json, text, method !== 'GET');
    // vrouter answers 2xx with JSON (a capture's pcapng is read elsewhere): anything else is
    // another server's answer, which vrouterctl cannot read (exit 4), not vrouter's.
    if (status >= 300 || (wantsJson && json === undefined)) throw new Error(`HTTP ${status}${contentType === '' ? '' : ` (${contentType.split(';')[0]})`}, not vrouter's JSON`);
    return { status, text, json };
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** `tokenSent`: a request vrouterctl sends the token with, where a refusal of it says how. */
function refusal(status: number, json: unknown, text: string, tokenSent: boolean): Error {
  const e = (json as { error?: { code?: unknown; field?: unknown; message?: unknown } | null } | null | undefined)?.error;
  // Not vrouter's refusal (another server's error page): an answer vrouterctl cannot read.
  if (typeof e !== 'object' || e === null || typeof e.code !== 'string') return new Error(`HTTP ${status}: ${text.trim().slice(0, 200) || 'no body'}`);
  let message = String(e.message ?? '');
  if (e.code === 'VR_UNAUTHORIZED' && tokenSent) message += ` (vrouterctl sends it from --token-file FILE or $${TOKEN_ENV})`;
  return new RefusedError(status, e.code, typeof e.field === 'string' ? e.field : '', message, text);
}
