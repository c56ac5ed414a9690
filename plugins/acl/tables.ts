// The acl plugin's shared memory, by region: the compiled rule tables (written once by the
// compile job, viewed by every PMD), the per-rule hit counters (a block per PMD), and the
// conntrack table. Region names carry a fingerprint of the compiled rules, so that a
// changed rule list gets new regions; a region kept holds its rules compiled (the digest
// in its header says which) and is not written again while PMDs read it.
import { createHash } from 'node:crypto';
import { compile, compiledBytesBound, type AclRule, type CompiledClassifier } from './classifier.ts';

/** Bumped when the layout of the tables region changes. */
const TABLES_FORMAT = 1;
/**
 * Header: [0] READY once the description and tables are written, [1] the description's
 * length, [2, 6) the first 16 bytes of the rules' SHA-256 (rulesDigest).
 */
const READY = 0x61636c74; // "aclt"
/** The description (CompiledClassifier as JSON, without its memory) lies in [64, TABLES_AT). */
const DESCRIPTION_AT = 64;
export const TABLES_AT = 8192;

export const CONNTRACK_REGION = 'conntrack';

/**
 * The first 16 bytes of the rules' SHA-256, in hex: names the regions of one rule list. Not a
 * 32-bit hash: a new rule list whose name were the running one's would be compiled into the
 * region its PMDs read (prepare() keeps a region of the same name), and they would see its
 * tables half-way.
 */
export function fingerprint(rules: readonly AclRule[]): string {
  return Buffer.from(rulesDigest(rules).buffer).toString('hex');
}

export function regionNames(rules: readonly AclRule[]): { tables: string; hits: string } {
  const fp = fingerprint(rules);
  return { tables: `rules-${fp}`, hits: `hits-${fp}` };
}

/** Bytes set aside for the tables of `rules`, before they are compiled (in the job). */
export function tablesBytes(rules: readonly AclRule[]): number {
  return TABLES_AT + compiledBytesBound(rules);
}

/** Per PMD: a Float64 per rule and one for the packets no rule matched, on whole cache lines. */
export function hitsBlockBytes(ruleCount: number): number {
  return Math.ceil(((ruleCount + 1) * 8) / 64) * 64;
}

/** Compiles `rules` into `memory` (a tables region) and publishes them; the compile job runs this. */
export function writeTables(memory: ArrayBufferLike, rules: readonly AclRule[]): CompiledClassifier {
  const compiled = compile(rules, { memory, offset: TABLES_AT, bytes: memory.byteLength - TABLES_AT });
  const description = new TextEncoder().encode(JSON.stringify({ ...compiled, memory: null }));
  if (DESCRIPTION_AT + description.length > TABLES_AT) throw new Error(`the tables' description takes ${description.length} bytes, more than the header has`);
  new Uint8Array(memory, DESCRIPTION_AT, description.length).set(description);
  const header = new Int32Array(memory, 0, 2 + DIGEST_WORDS);
  header[1] = description.length;
  header.set(rulesDigest(rules), 2);
  // Atomics: publishes the tables and their description to any thread that sees READY.
  Atomics.store(header, 0, READY);
  return compiled;
}

const DIGEST_WORDS = 4;

/** The rules' SHA-256, its first 16 bytes as words: what a tables region holds and is named by (fingerprint). */
function rulesDigest(rules: readonly AclRule[]): Int32Array {
  const digest = createHash('sha256').update(`${TABLES_FORMAT}:${JSON.stringify(rules)}`).digest();
  return new Int32Array(digest.buffer.slice(digest.byteOffset, digest.byteOffset + DIGEST_WORDS * 4));
}

/** Whether a tables region holds `rules`, compiled and published. */
export function holdsRules(memory: ArrayBufferLike, rules: readonly AclRule[]): boolean {
  const header = new Int32Array(memory, 0, 2 + DIGEST_WORDS);
  if (Atomics.load(header, 0) !== READY) return false;
  const digest = rulesDigest(rules);
  return digest.every((word, k) => header[2 + k] === word);
}

/** The compiled rules in a tables region, or null if they were not written yet. */
export function readTables(memory: ArrayBufferLike): CompiledClassifier | null {
  const header = new Int32Array(memory, 0, 2);
  if (Atomics.load(header, 0) !== READY) return null;
  const description = new Uint8Array(memory, DESCRIPTION_AT, header[1]).slice();
  return { ...(JSON.parse(new TextDecoder().decode(description)) as Omit<CompiledClassifier, 'memory'>), memory };
}
