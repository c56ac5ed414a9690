// `vrouterctl capture PORT -w FILE`: a port's frames as pcapng (GET /ports/NAME/capture),
// each received frame with what every stage did to it, written as they come. Only whole
// blocks reach the file, so that it can be read at any moment, and after Ctrl-C, which ends
// the capture as tcpdump's does. `-w -` writes to stdout, for `| tshark -r -`.
import { once } from 'node:events';
import { accessSync, constants, createWriteStream, lstatSync, openSync, renameSync, rmSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { UnreachableError } from './client.ts';
import { misuse, segment, type Command } from './command.ts';

const SHB = 0x0a0d0d0a;
const ISB = 0x00000005;
const EPB = 0x00000006;
const OPT_COMMENT = 1;
/** an Interface Statistics Block's options start after its interface id and timestamp */
const ISB_OPTIONS = 20;

/**
 * Cuts a pcapng stream into whole blocks (the endpoint writes little-endian sections),
 * counting the packets and keeping the comment of the statistics block that ends a capture.
 */
class BlockCutter {
  private pending: Buffer = Buffer.alloc(0);
  private first = true;
  packets = 0;
  /** what the endpoint said when the capture ended, or null before */
  ending: string | null = null;

  /** The whole blocks the stream has completed with this chunk, as one buffer. */
  cut(chunk: Buffer): Buffer {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    while (buf.length - at >= 12) {
      const type = buf.readUInt32LE(at);
      const length = buf.readUInt32LE(at + 4);
      if ((this.first && type !== SHB) || length < 12 || length % 4 !== 0) throw new Error('the endpoint did not answer with pcapng');
      if (buf.length - at < length) break;
      this.first = false;
      this.note(buf.subarray(at, at + length));
      at += length;
    }
    this.pending = Buffer.from(buf.subarray(at));
    return buf.subarray(0, at);
  }

  private note(block: Buffer): void {
    const type = block.readUInt32LE(0);
    if (type === EPB) this.packets++;
    if (type !== ISB) return;
    for (let o = ISB_OPTIONS; o + 4 <= block.length - 4; ) {
      const code = block.readUInt16LE(o);
      const len = block.readUInt16LE(o + 2);
      if (code === 0) break;
      if (code === OPT_COMMENT) this.ending = block.toString('utf8', o + 4, o + 4 + len);
      o += 4 + ((len + 3) & ~3);
    }
  }
}

/**
 * Where the capture is written before it takes FILE's name: beside FILE, when FILE is a
 * regular file or not there yet, and its directory may be written. Anything else (a link,
 * which a rename would replace rather than write through: /dev/stdout; a device, a pipe; a
 * directory only FILE may be written in) is written as it is: null.
 */
function besideOf(file: string): string | null {
  let kind: Stats | null = null;
  try {
    kind = lstatSync(file);
  } catch {
    // not there yet
  }
  if (kind !== null && !kind.isFile()) return null;
  try {
    accessSync(dirname(file), constants.W_OK);
  } catch {
    return null;
  }
  return join(dirname(file), `.${basename(file)}.${process.pid}.vrouterctl`);
}

export const captureCommand: Command = {
  words: ['capture'], args: 'PORT -w FILE [--count N] [--seconds S] [--filter EXPR] [--snap BYTES]', min: 1, max: 1,
  options: ['write', 'count', 'seconds', 'filter', 'snap'],
  summary: 'the port\'s frames as pcapng, with each stage\'s verdict; -w - for stdout; Ctrl-C stops',
  run: async (ctx, [port]) => {
    const file = ctx.options.write;
    if (file === undefined) throw misuse(captureCommand, 'capture needs -w FILE (pcapng; -w - writes to stdout)');
    const toStdout = file === '-';
    if (toStdout && ctx.stdout.isTTY === true) throw misuse(captureCommand, 'pcapng is binary: write it to a file, or pipe stdout (-w - | tshark -r -)');
    const query = new URLSearchParams();
    for (const key of ['count', 'seconds', 'filter', 'snap'] as const) if (ctx.options[key] !== undefined) query.set(key, ctx.options[key]!);
    // The file is made before the capture starts (a path that cannot be written is a usage
    // error, told before anything is asked of the router) beside FILE, readable by its owner
    // only (it holds guests' traffic), and takes FILE's name once the router answers: a
    // capture refused leaves a file there as it was. What cannot be so (see besideOf) is
    // written as it is, and never removed.
    let fd = -1;
    let made: string | null = null;
    if (!toStdout) {
      made = besideOf(file);
      try {
        fd = openSync(made ?? file, made === null ? 'w' : 'wx', 0o600);
      } catch (err) {
        throw misuse(captureCommand, `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    const fileOut = toStdout ? null : createWriteStream('', { fd });
    const out: NodeJS.WritableStream = fileOut ?? ctx.stdout;
    const where = toStdout ? 'stdout' : file;
    const note = (line: string) => void ctx.stderr.write(`vrouterctl: ${line}\n`);
    let body: Readable;
    try {
      body = await ctx.api.stream(`/ports/${segment(port)}/capture${query.size > 0 ? `?${query}` : ''}`);
    } catch (err) {
      fileOut?.destroy();
      if (made !== null) rmSync(made, { force: true });
      throw err;
    }
    if (made !== null) {
      try {
        renameSync(made, file);
      } catch (err) {
        body.destroy();
        fileOut?.destroy();
        rmSync(made, { force: true });
        throw misuse(captureCommand, `cannot write ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      }
    }
    note(`capturing on port ${port} to ${where}; Ctrl-C stops`);
    let stoppedBy: string | null = null;
    const stop = (signal: NodeJS.Signals) => {
      stoppedBy = signal;
      body.destroy();
    };
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    for (const s of signals) process.on(s, stop);
    const blocks = new BlockCutter();
    let failure: unknown = null;
    try {
      for await (const chunk of body) {
        const whole = blocks.cut(chunk as Buffer);
        if (whole.length > 0 && !out.write(whole)) await once(out, 'drain');
      }
    } catch (err) {
      if (stoppedBy === null) failure = err;
    } finally {
      for (const s of signals) process.off(s, stop);
      if (fileOut !== null) await new Promise<void>((resolve) => fileOut.end(() => resolve()));
    }
    const written = `${blocks.packets} packets written to ${where}`;
    if (failure !== null) throw new UnreachableError(`the capture stopped before its end: ${(failure as Error).message}; ${written}`);
    note(stoppedBy !== null ? `${written}; stopped by ${stoppedBy}` : `${written}; ${blocks.ending ?? 'the capture ended'}`);
  },
};
