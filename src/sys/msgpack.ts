// msgpackr's encoder and decoder, for the control messages between vrouter's threads and
// processes. Through its 'msgpackr/pack' entry: the package's main one also loads its
// optional native string decoder (msgpackr-extract), 17 ms in each thread that imports it
// (five or more at every start), to speed up long strings that these messages do not carry.
export { pack, unpack } from 'msgpackr/pack';
