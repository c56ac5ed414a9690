// The plugin API's MACs as two numbers: the high 16 bits, and the low 32 as an int32 (their
// bits), whichever way they were made (parsed from the config, read from a frame) and for
// every third byte, so that a stage compares them as they come.
import t from 'tap';
import { formatMac, macHi, macLo, parseMac, writeMac } from '../../src/pipeline/api.ts';

t.test('parsed, read from a frame, written and formatted: the same two numbers, small integers', async (t) => {
  for (const text of ['52:54:00:12:34:56', '02:00:7f:ff:ff:ff', '02:00:80:00:00:00', 'fe:ff:ff:ff:ff:fe', 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00']) {
    const [hi, lo] = parseMac(text);
    t.equal(lo, lo | 0, `${text}: the low word an int32`);
    const frame = new Uint8Array(10);
    frame.set(text.split(':').map((h) => parseInt(h, 16)), 2);
    t.same([macHi(frame, 2), macLo(frame, 2)], [hi, lo], `${text}: read from a frame as parsed`);
    const written = new Uint8Array(10);
    writeMac(written, 2, hi, lo);
    t.same(written, frame, `${text}: written back as it was`);
    t.equal(formatMac(hi, lo), text, `${text}: formatted as it was`);
  }
  t.equal(parseMac('02:00:80:00:00:00')[1], -(2 ** 31), 'a third byte of 0x80: negative as an int32');
  t.equal(formatMac(0xffff, 0xffffffff), 'ff:ff:ff:ff:ff:ff', 'a low word given as a u32 is formatted the same');
});
