// The admin endpoint's HTTP side: listening (a UNIX socket made 0600 from the start, or TCP),
// the bearer token for changes, bounded JSON bodies, routing a request to its handler, and
// errors as {"error": {"code", "field", "message"}} with stable codes. Handlers never see a
// raw request, only what they declared: path parameters, query, a validated body. The
// endpoint keeps a bounded number of connections, and a request has to arrive in time:
// the supervisor's file descriptors are the guests' sockets and memory files too, and no
// admin client, however many connections it opens or however slowly it writes, may take
// those from a frontend.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { chmodSync, rmSync, statSync } from 'node:fs';
import type { Socket } from 'node:net';
import { isLoopbackAddress, parseAddress } from '../pipeline/net.ts';
import { createHash, timingSafeEqual } from 'node:crypto';
import { removeStaleSocket } from '../sys/libc.ts';
import { jsonShapeProblem } from '../control/json-shape.ts';
import { readAdminToken, type AdminConfig } from '../control/config.ts';
import type { Log } from '../log.ts';

// Required, not imported: an import of node:http reads every export it has, and its
// WebSocket, CloseEvent and MessageEvent load Node's own copy of undici (this module took
// 170 to 180 ms to import with it, 105 to 140 without).
const { createServer, maxHeaderSize, STATUS_CODES } = createRequire(import.meta.url)('node:http') as typeof import('node:http');

/** A refusal: the HTTP status, a stable code, the field at fault (or ''), and why. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field: string;
  constructor(status: number, code: string, field: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export interface Request {
  method: string;
  /** path parameters, decoded */
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

/** A response: JSON (any value), text with a content type, or a stream written by the handler. */
export type Reply =
  | { status?: number; json: unknown }
  | { status?: number; text: string; contentType: string }
  | { stream: (res: ServerResponse) => void };

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** "/routes/{prefix}": segments in braces are parameters */
  path: string;
  handle(req: Request): Promise<Reply> | Reply;
  /** a read that shows guests' traffic (capture): it needs the token like a change */
  sensitive?: boolean;
}

const MAX_BODY_BYTES = 1 << 20;
/**
 * Connections kept at once (an operator's CLI, a Prometheus, an orchestrator need a few);
 * more are closed as they come. A capture stream holds one for as long as it runs.
 */
export const MAX_CONNECTIONS = 64;
/**
 * A new connection's first request must start within its headers timeout (config
 * admin.headersTimeout) and its headers be in within it too, the whole request within
 * REQUEST_TIMEOUT_MS or the headers timeout if longer (Node: no limit, 60 s and 300 s).
 */
const REQUEST_TIMEOUT_MS = 30_000;
/** How often half-received requests are checked against those limits (Node: 30 s). */
const TIMEOUT_CHECK_MS = 1_000;
/** Requests answered at once on one connection: more pipelined behind them end it (each would build its answer meanwhile). */
export const MAX_PIPELINED = 8;
/** How long close() lets answers being made be written (a change the supervisor lets end as vrouter stops). */
const CLOSE_WAIT_MS = 5_000;

export class AdminHttp {
  private readonly server: Server;
  private readonly routes: { route: Route; pattern: RegExp; names: string[] }[];
  private readonly token: Buffer | null;
  private readonly config: AdminConfig;
  private readonly log: Log | undefined;
  /** requests being answered, by connection */
  private readonly answering = new WeakMap<Socket | Duplex, number>();
  /** answers being made or written (not streams: a capture would hold close() for its length) */
  private readonly unanswered = new Set<ServerResponse>();

  constructor(config: AdminConfig, routes: Route[], log?: Log) {
    this.config = config;
    this.log = log;
    const token = config.tokenFile === null ? null : readAdminToken(config.tokenFile);
    const mode = config.tokenFile === null ? 0 : statSync(config.tokenFile).mode & 0o777;
    if ((mode & 0o077) !== 0) log?.warn(`the admin token file ${config.tokenFile} can be read by other users (mode 0${mode.toString(8)}): chmod 600 it`);
    this.token = token === null ? null : createHash('sha256').update(token).digest();
    this.routes = routes.map((route) => {
      const names: string[] = [];
      const pattern = new RegExp(`^${route.path.replace(/\{(\w+)\}/g, (_, n: string) => (names.push(n), '([^/]+)'))}$`);
      return { route, pattern, names };
    });
    const headersMs = config.headersTimeoutMs;
    const requestMs = Math.max(REQUEST_TIMEOUT_MS, headersMs);
    this.server = createServer({ headersTimeout: headersMs, requestTimeout: requestMs, connectionsCheckingInterval: TIMEOUT_CHECK_MS }, (req, res) => void this.serve(req, res));
    this.server.maxConnections = MAX_CONNECTIONS;
    this.server.on('drop', () => log?.warn(`refused a connection: ${MAX_CONNECTIONS} are open, the most the endpoint keeps`, 'admin.refused'));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerUnreadable(err, socket, headersMs, requestMs));
    // Node's headersTimeout counts from a request's first byte: a connection that sends
    // none would hold its place for good. Destroyed on timeout (no 'timeout' listener).
    this.server.on('connection', (socket: Socket) => socket.setTimeout(headersMs));
  }

  /** Starts listening; resolves when it does. */
  async listen(): Promise<void> {
    const l = this.config.listen;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      if (l.kind === 'unix') {
        removeStaleSocket(l.path);
        // Created 0600: no moment in which another local user could connect.
        const mask = process.umask(0o177);
        this.server.once('error', () => process.umask(mask));
        this.server.listen(l.path, () => {
          process.umask(mask);
          chmodSync(l.path, 0o600);
          process.once('exit', this.removeSocketFile);
          resolve();
        });
      } else {
        this.server.listen(l.port, l.host, () => resolve());
      }
    });
  }

  /** The TCP port listened on (useful with port 0), or null for a UNIX socket. */
  get port(): number | null {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a.port : null;
  }

  /**
   * No new connection, idle ones closed at once; an answer being made (a change under way,
   * which the supervisor lets end as vrouter stops) is written first, for CLOSE_WAIT_MS at
   * most, then every connection goes, streams (captures) too.
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const deadline = Date.now() + CLOSE_WAIT_MS;
    while (this.unanswered.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
    this.server.closeAllConnections();
    await closed;
    process.off('exit', this.removeSocketFile);
    this.removeSocketFile();
  }

  /** The UNIX socket's file: gone when the endpoint closes, or the process exits without closing it (a thread of vrouter died). */
  private readonly removeSocketFile = (): void => {
    if (this.config.listen.kind === 'unix') rmSync(this.config.listen.path, { force: true });
  };

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // A request came: no idle limit while it is answered (a capture may stream for an hour);
    // Node sets its keep-alive timeout once the answer is sent. What bounds an answer is
    // its client reading it (watchProgress).
    const socket = req.socket;
    socket.setTimeout(0);
    // The connection's first request starts its watch.
    if (!this.answering.has(socket)) watchProgress(socket, this.config.stalledAnswerMs);
    const pending = (this.answering.get(socket) ?? 0) + 1;
    if (pending > MAX_PIPELINED) {
      this.log?.warn(`admin: a client sent more than ${MAX_PIPELINED} requests at once on one connection: closed`, 'admin.refused');
      socket.destroy();
      return;
    }
    this.answering.set(socket, pending);
    res.once('close', () => this.answering.set(socket, (this.answering.get(socket) ?? 1) - 1));
    this.unanswered.add(res);
    const answered = () => this.unanswered.delete(res);
    res.once('finish', answered).once('close', answered);
    try {
      this.refuseBrowsers(req);
      const url = requestUrl(req.url);
      const method = req.method ?? 'GET';
      let params: Record<string, string> | null = null;
      let route: Route | null = null;
      let pathKnown = false;
      const allowed: string[] = [];
      for (const r of this.routes) {
        const m = r.pattern.exec(url.pathname);
        if (m === null) continue;
        pathKnown = true;
        allowed.push(r.route.method);
        if (r.route.method !== method) continue;
        route = r.route;
        params = Object.fromEntries(r.names.map((n, i) => [n, decodeParam(n, m[i + 1])]));
        break;
      }
      if (route === null) {
        // RFC 9110 15.5.6: a 405 says which methods the resource takes.
        if (pathKnown) {
          res.setHeader('allow', allowed.join(', '));
          throw new ApiError(405, 'VR_METHOD', '', `${method} is not supported on ${url.pathname} (it takes ${allowed.join(', ')})`);
        }
        throw new ApiError(404, 'VR_NOT_FOUND', '', `no such resource: ${url.pathname} (GET /openapi.json lists them)`);
      }
      if (method !== 'GET' || route.sensitive === true) this.authorise(req);
      const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? await readJson(req) : undefined;
      const reply = await route.handle({ method, params: params!, query: url.searchParams, body });
      if ('stream' in reply) {
        answered();
        return reply.stream(res);
      }
      if ('json' in reply) return send(res, reply.status ?? 200, 'application/json', `${JSON.stringify(reply.json, null, 2)}\n`);
      return send(res, reply.status ?? 200, reply.contentType, reply.text);
    } catch (err) {
      const e = err instanceof ApiError ? err : fromError(err);
      // Not the request's fault: the operator needs the stack to report it (the log limits repeats).
      if (e.status >= 500) this.log?.error(`admin: ${req.method} ${req.url} failed: ${(err as Error)?.stack ?? String(err)}`);
      send(res, e.status, 'application/json', `${JSON.stringify({ error: { code: e.code, field: e.field, message: e.message } })}\n`);
    }
  }

  /**
   * A web page in a browser on this host can send requests to a TCP listener (a form's
   * POST needs no preflight) and, through a name it rebinds to 127.0.0.1, read the answers:
   * what a browser sends for a page is refused. Browsers mark it (Origin, on every request
   * but a navigation's GET; Sec-Fetch-Site other than "none", typed in the address bar),
   * and a loopback listener answers requests to a loopback name or address only (a rebound
   * name is neither). A UNIX socket is out of a browser's reach.
   */
  private refuseBrowsers(req: IncomingMessage): void {
    const l = this.config.listen;
    if (l.kind === 'unix') return;
    const site = req.headers['sec-fetch-site'];
    if (req.headers.origin !== undefined || (site !== undefined && site !== 'none')) {
      throw new ApiError(403, 'VR_FORBIDDEN', '', "a request a web page made (it has an Origin or Sec-Fetch-Site header): the endpoint answers vrouterctl and other clients, not pages in a browser");
    }
    const host = req.headers.host ?? '';
    if (l.loopback && !isLoopbackHost(host, l.host)) {
      throw new ApiError(403, 'VR_FORBIDDEN', '', `a request to the host ${JSON.stringify(host.slice(0, 100))}: the endpoint listens on a loopback address and answers requests to localhost or a loopback address only`);
    }
  }

  /** Changes need the token when one is set (compared in constant time). */
  private authorise(req: IncomingMessage): void {
    if (this.token === null) return;
    const header = req.headers.authorization ?? '';
    // Digests of equal length compared: the time taken says nothing of the token, its length neither.
    const given = createHash('sha256').update(header.startsWith('Bearer ') ? header.slice(7).trim() : '').digest();
    if (!timingSafeEqual(given, this.token)) {
      throw new ApiError(401, 'VR_UNAUTHORIZED', '', 'this request changes the router: it needs "Authorization: Bearer <token>" with the token of admin.tokenFile');
    }
  }
}

/** Entries written per piece of a streamed list; the event loop runs between two pieces. */
const ROWS_PER_PIECE = 2000;

/**
 * A JSON array of `rows`, written as they come (one entry a line), so that a list of a
 * million routes is never one string in memory, and the supervisor goes on with its work
 * between two pieces. A null row (LIST_PAUSE) is written as nothing: a list passing over
 * entries its query leaves out yields it now and then, so that a piece ends in time even
 * when nothing matches. The first row is read now: an error the list throws at once (a
 * bad query) is answered as an error, not as a cut list.
 */
export function jsonRows(rows: Iterable<unknown>): Reply {
  if (Array.isArray(rows) && rows.length <= ROWS_PER_PIECE) return { json: rows };
  const it = rows[Symbol.iterator]();
  const first = it.next();
  return {
    stream: (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      let next = first;
      let written = 0;
      let closed = false;
      let opened = false;
      const piece = () => {
        if (closed) return;
        let text = opened ? '' : '[';
        opened = true;
        try {
          for (let n = 0; n < ROWS_PER_PIECE && !next.done; n++, next = it.next()) {
            if (next.value !== null) text += `${written++ > 0 ? ',' : ''}\n${JSON.stringify(next.value)}`;
          }
        } catch {
          // A list that fails half-way cannot say so any more: the reply is cut short.
          res.destroy();
          return;
        }
        if (next.done) return void res.end(`${text}\n]\n`);
        if (res.write(text)) setImmediate(piece);
        else res.once('drain', piece);
      };
      res.on('close', () => {
        closed = true;
        it.return?.();
      });
      piece();
    },
  };
}

/**
 * A request Node could not read (not HTTP, headers past Node's limit, too slow) gets an
 * answer in the API's error format, as Node's own handler would give a bare one, and the
 * connection closes. No answer when the client is gone, or one to an earlier request is
 * already under way on the connection (it would land in the middle of it).
 */
function answerUnreadable(err: NodeJS.ErrnoException, socket: Duplex, headersMs: number, requestMs: number): void {
  const answering = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (err.code !== 'ECONNRESET' && socket.writable && !answering?.headersSent) {
    const [status, code, message] =
      err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'VR_TOO_LARGE', `the request line and headers are longer than ${maxHeaderSize} bytes`]
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'VR_TIMEOUT', `the request did not arrive in time (its headers within ${headersMs / 1000} s, the whole within ${requestMs / 1000} s)`]
      : [400, 'VR_BAD_REQUEST', `not a request HTTP/1.1 can read (${err.code ?? err.message})`];
    const body = `${JSON.stringify({ error: { code, field: '', message } })}\n`;
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

/**
 * Ends the connection once an answer has waited `stalledMs` (config admin.stalledAnswerTimeout)
 * with nothing of it taken by the client: one that never reads would hold its place (of
 * MAX_CONNECTIONS) and the answer's bytes for good (Node's timeouts count while a request
 * comes in, not while its answer goes out). Stalled: what waits to be sent (writableLength)
 * has not shrunk, nor has the socket drained, since the last look (bytesWritten counts what
 * the answer wrote, not what the client read). Started once a connection, it lasts as long
 * as the connection.
 */
function watchProgress(socket: Socket | Duplex, stalledMs: number): void {
  let lastPending = socket.writableLength;
  let drained = false;
  let stalledSince = performance.now();
  const onDrain = () => {
    drained = true;
  };
  socket.on('drain', onDrain);
  const timer = setInterval(() => {
    if (socket.destroyed) return stop();
    const now = performance.now();
    const pending = socket.writableLength;
    if (pending === 0 || pending < lastPending || drained) stalledSince = now;
    else if (now - stalledSince >= stalledMs) {
      socket.destroy();
      return stop();
    }
    lastPending = pending;
    drained = false;
  }, TIMEOUT_CHECK_MS).unref();
  const stop = () => {
    clearInterval(timer);
    socket.off('drain', onDrain);
  };
  socket.once('close', stop);
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * Whether a Host header names this host's loopback (localhost, 127/8, ::1 however written)
 * or `listening`, whatever its port. None at all (an HTTP/1.0 client's) is no browser's.
 */
function isLoopbackHost(header: string, listening: string): boolean {
  if (header === '') return true;
  const name = (header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d*$/, '')).toLowerCase().replace(/\.$/, '');
  if (name === 'localhost' || name === listening.toLowerCase()) return true;
  try {
    return isLoopbackAddress(parseAddress(name));
  } catch {
    return false;
  }
}

/** The request's target as a URL: one Node's parser takes but URL does not (`http://[`) is the request's fault. */
function requestUrl(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://vrouter');
  } catch {
    throw new ApiError(400, 'VR_BAD_REQUEST', '', 'the request target is not a URL');
  }
}

/** A path parameter, percent-decoded; malformed encoding is the request's fault. */
function decodeParam(name: string, text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw new ApiError(400, 'VR_INVALID', name, `malformed percent-encoding: ${text}`);
  }
}

/** An error thrown by the config or a plugin's checks: a 400 naming the field. */
function fromError(err: unknown): ApiError {
  const e = err as Error & { code?: string; field?: string; committed?: boolean };
  // In force, and then a step after failed (the PMDs' restart on new ports): not a refusal.
  if (e?.committed === true) return new ApiError(500, 'VR_APPLIED_PARTLY', '', e.message);
  if (e?.code === 'VR_BUSY') return new ApiError(503, 'VR_BUSY', '', e.message);
  if (typeof e?.field === 'string') return new ApiError(400, e.code === 'VR_PLUGIN_CONFIG' ? 'VR_CONFIG' : (e.code ?? 'VR_CONFIG'), e.field, e.message.replace(`${e.field}: `, ''));
  return new ApiError(500, 'VR_INTERNAL', '', (e as Error)?.message ?? String(err));
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const tooLarge = () => new ApiError(413, 'VR_TOO_LARGE', '', `the body is larger than ${MAX_BODY_BYTES} bytes`);
  if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  // Not `for await`: leaving it destroys the request, and its connection with it, before
  // the 413 is written. Past the limit the rest is left to Node, which reads and discards
  // it (within the request's time limit) and then answers.
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    let size = 0;
    const take = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) return void chunks.push(chunk);
      req.off('data', take);
      req.resume();
      reject(tooLarge());
    };
    req.on('data', take);
    req.once('end', resolve);
    // A client gone before its body ended: its fault, nothing for the log's errors.
    const gone = () => reject(new ApiError(400, 'VR_BAD_REQUEST', '', 'the connection closed before the body ended'));
    req.once('error', gone);
    req.once('close', () => {
      if (!req.complete) gone();
    });
  });
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new ApiError(400, 'VR_BAD_JSON', '', `the body is not JSON: ${(err as Error).message}`);
  }
  const problem = jsonShapeProblem(text, body);
  if (problem !== null) throw new ApiError(400, 'VR_INVALID', problem.field, problem.reason);
  return body;
}
