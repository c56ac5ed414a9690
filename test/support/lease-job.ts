// A job for the job pool's tests: makes regions with sharedBuffer, writes them, keeps some.
import { encodeShared, sharedBuffer, type SharedRef } from '../../src/sys/shared-arena.ts';

export interface LeaseJobInput {
  keep: number[];
  drop: number;
  fail: boolean;
}

export default function leaseJob(input: LeaseJobInput): { kept: ArrayBufferLike[]; droppedAt: number } {
  const kept = input.keep.map((bytes) => {
    const b = sharedBuffer(bytes);
    new Uint8Array(b).fill(7);
    return b;
  });
  const temporary = sharedBuffer(input.drop);
  new Uint8Array(temporary).fill(9);
  if (input.fail) throw new Error('the job was asked to fail');
  // Where the dropped region was, as a plain number: not a region the result holds.
  return { kept, droppedAt: (encodeShared({ temporary }).temporary as unknown as SharedRef).$shared };
}
