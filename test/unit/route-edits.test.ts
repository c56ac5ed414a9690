// Route edits on copies of the document: each copy's index of routes by prefix is layered
// on its source's, and must say what a fresh index of its list would, however many copies
// (and flattenings) lie between.
import t from 'tap';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { CANONICAL_GENERATION, canonicalPrefix, canonicalPrefixesHeld, hasRouteTo, indexEntriesCompacted, routeDraft } from '../../src/admin/route-edits.ts';

t.test('a chain of copies, each adding and removing routes, against the lists themselves', async (t) => {
  let doc: Record<string, unknown> = { routes: [{ prefix: '10.0.0.0/8', via: '10.1.1.1' }] };
  let next = 0;
  const live: string[] = ['10.0.0.0/8'];
  const removedBefore: string[] = [];
  let mismatches = 0;
  for (let copy = 0; copy < 60; copy++) {
    const draft = routeDraft((doc = { ...doc }));
    for (let k = 0; k < 5; k++) {
      const prefix = `2001:db8::${(next++).toString(16)}/128`;
      draft.add({ prefix, via: '10.1.1.1' });
      live.push(prefix);
    }
    // ECMP: a second route to a prefix already there; removing the prefix takes both.
    if (copy % 7 === 0) draft.add({ prefix: live[live.length - 1], via: '10.1.1.2' });
    const gone = live.splice(copy % 3, 2);
    // Written another way (IPv6 in full): found all the same.
    const removed = draft.remove(gone.map((p) => p.replace('2001:db8::', '2001:0db8:0000:0000:0000:0000:0000:')));
    if (removed.length < gone.length) mismatches++;
    const routes = doc.routes as { prefix: string }[];
    const inList = new Set(routes.map((r) => r.prefix));
    removedBefore.push(...gone);
    for (const p of [...live, ...removedBefore, '2001:db8::ffff/128', '203.0.113.0/24']) if (hasRouteTo(routes, p) !== inList.has(p)) mismatches++;
    t.same([...inList].sort(), [...live].sort(), `copy ${copy}: the list holds what was added and not removed`);
  }
  t.equal(mismatches, 0, 'every index answered as its list');
});

t.test('prefixes in their canonical form, remembered in two generations: a stream of new ones keeps at most two generations\' worth', async (t) => {
  const inUse = '2001:0db8:0000:0000:0000:0000:0000:0001/128';
  t.equal(canonicalPrefix(inUse), '2001:db8::1/128');
  let wrong = 0;
  for (let n = 0; n < 5 * CANONICAL_GENERATION; n++) {
    const text = `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/32`;
    if (canonicalPrefix(text) !== text) wrong++;
    if (n % 1000 === 0 && canonicalPrefix(inUse) !== '2001:db8::1/128') wrong++;
  }
  t.equal(wrong, 0, 'each prefix, and one asked for all along (carried from generation to generation), in canonical form');
  t.ok(canonicalPrefixesHeld() <= 2 * CANONICAL_GENERATION, `${canonicalPrefixesHeld()} held after ${5 * CANONICAL_GENERATION} new prefixes (at most ${2 * CANONICAL_GENERATION})`);
  t.equal(canonicalPrefix('10.0.0.1/33'), null, 'not a prefix: null');
  t.equal(canonicalPrefix('10.0.0.1/33'), null, 'and null again when remembered');
  t.equal(canonicalPrefix('ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128'), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'the longest way to write a prefix');
  const held = canonicalPrefixesHeld();
  const long = Array.from({ length: 100 }, (_, n) => canonicalPrefix(`${'1'.repeat(100_000)}${n}`));
  t.ok(long.every((text) => text === null), '100 strings of 100 KB: not prefixes');
  t.equal(canonicalPrefixesHeld(), held, "a client's long strings are not remembered");
});

t.test('a long chain of small edits on a big list: every index answers as its list, and compacting costs about the edits, not the list', async (t) => {
  const BASE = 5000;
  const COPIES = 300;
  let doc: Record<string, unknown> = { routes: Array.from({ length: BASE }, (_, i) => ({ prefix: `10.${i >>> 8}.${i & 255}.0/24`, via: '10.1.1.1' })) };
  const live = (doc.routes as { prefix: string }[]).map((r) => r.prefix);
  const gone: string[] = [];
  const copiedBefore = indexEntriesCompacted();
  let mismatches = 0;
  let next = 0;
  for (let copy = 0; copy < COPIES; copy++) {
    const draft = routeDraft((doc = { ...doc }));
    const out = [live.splice((copy * 7919) % live.length, 1)[0], live.splice((copy * 104729) % live.length, 1)[0]];
    draft.remove(out);
    gone.push(...out);
    for (let k = 0; k < 3; k++) {
      const prefix = `172.16.${(next >>> 8) & 255}.${next++ & 255}/32`;
      draft.add({ prefix, via: '10.1.1.1' });
      live.push(prefix);
    }
    const routes = doc.routes as { prefix: string }[];
    if (routes.length !== live.length) mismatches++;
    for (const p of [...out, live[copy % live.length], live[live.length - 1], gone[copy % gone.length], '192.0.2.0/24']) if (hasRouteTo(routes, p) !== live.includes(p)) mismatches++;
  }
  t.equal(mismatches, 0, 'every copy\'s index answered as its list');
  const copied = indexEntriesCompacted() - copiedBefore;
  // Compacting the whole chain every 16 copies (BASE entries each time) would copy at least 93,750.
  t.ok(copied <= COPIES * 5 * 8, `${copied} index entries copied for ${COPIES * 5} changes on a list of ${BASE} (at most ${COPIES * 5 * 8})`);
});

t.test('the lists before the one in force are not kept alive by the lists made from them', async (t) => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  let doc: Record<string, unknown> = { routes: Array.from({ length: 1000 }, (_, i) => ({ prefix: `10.1.${i >>> 8}.${i & 255}/32`, via: '10.1.1.1' })) };
  const lists: WeakRef<unknown[]>[] = [];
  for (let copy = 0; copy < 20; copy++) {
    const draft = routeDraft((doc = { ...doc }));
    draft.remove([`10.1.0.${copy}/32`]);
    draft.add({ prefix: `10.2.0.${copy}/32`, via: '10.1.1.1' });
    lists.push(new WeakRef(draft.routes));
  }
  // A WeakRef keeps its target for the rest of the job that made it.
  await new Promise((resolve) => setTimeout(resolve, 0));
  gc();
  const kept = lists.slice(0, -1).filter((ref) => ref.deref() !== undefined).length;
  t.equal(kept, 0, `${kept} of the 19 lists before the last one still alive`);
  t.ok(lists.at(-1)!.deref() === doc.routes && hasRouteTo(doc.routes as unknown[], '10.2.0.19/32') && !hasRouteTo(doc.routes as unknown[], '10.1.0.19/32'), 'the last one is, and answers');
});
