// The message channel between vrouter's processes, as the supervisor's end uses it: what a
// faulty data plane sends (a value its handler cannot take, a message without end, fds
// with it) costs that message, never an exception in the event loop, and no fd is kept.
import t from 'tap';
import { readdirSync } from 'node:fs';
import { closeAll, eventfd, MAX_PACKET_BYTES, sendPacket, seqpacketPair } from '../../src/sys/libc.ts';
import { PacketChannel } from '../../src/sys/packet-channel.ts';
import { waitFor } from '../support/traffic.ts';

const MORE = 1;
const LAST = 0;

function pair(t: { teardown(fn: () => void): void }, maxMessageBytes?: number) {
  const [near, far] = seqpacketPair();
  const got: unknown[] = [];
  const invalid: string[] = [];
  const channel = new PacketChannel(
    near,
    {
      message: (m, fds) => {
        closeAll(fds);
        if (m === 'throw' || (typeof m === 'object' && m !== null && 'throw' in m)) throw new Error('not a message of ours');
        got.push(m);
      },
      closed: () => {},
      invalid: (why) => invalid.push(why),
    },
    maxMessageBytes,
  );
  const peer = new PacketChannel(far, { message: () => {}, closed: () => {} });
  t.teardown(() => {
    channel.close();
    peer.close();
  });
  return { got, invalid, peer, far };
}

t.test('a value in many pieces comes whole; one its handler throws on is reported, and the next comes', async (t) => {
  const { got, invalid, peer } = pair(t);
  const long = 'x'.repeat(3 * MAX_PACKET_BYTES);
  peer.send({ long });
  peer.send('throw');
  // A 64-bit integer comes back a BigInt, which JSON cannot write: the report says it all the same.
  peer.send({ throw: 1, big: 2n ** 63n });
  peer.send({ after: 1 });
  await waitFor('both values', () => got.length === 2 || undefined, 2000);
  t.same(got, [{ long }, { after: 1 }]);
  t.equal(invalid.length, 2);
  t.match(invalid[0], /a message it could not take \(not a message of ours\): "throw"/);
  t.match(invalid[1], /a message it could not take \(not a message of ours\): \{"throw":1,"big":"9223372036854775808n"\}/);
});

t.test('a message longer than the most taken is dropped with its fds, whatever follows it', async (t) => {
  const { got, invalid, peer, far } = pair(t, 1 << 20);
  const piece = new Uint8Array(MAX_PACKET_BYTES);
  const fdsBefore = readdirSync('/proc/self/fd').length;
  const fd = eventfd();
  piece[0] = MORE;
  t.ok(sendPacket(far, piece, [fd]), 'the first piece, with an fd');
  closeAll([fd]);
  // 40 pieces of 64 KiB: 2.5 MiB, past the 1 MiB taken. Sent as the socket takes them.
  for (let k = 1; k < 40; k++) {
    piece[0] = k === 39 ? LAST : MORE;
    await waitFor('room in the socket', () => sendPacket(far, piece) || undefined, 2000);
  }
  peer.send({ after: 2 });
  await waitFor('the value after it', () => got.length === 1 || undefined, 2000);
  t.same(got, [{ after: 2 }], 'the long one dropped, the next taken');
  t.same(invalid, ['a message longer than 1048576 bytes'], 'reported once');
  t.equal(readdirSync('/proc/self/fd').length, fdsBefore, 'the fd that came with it is closed');
});
