// Numbers from Linux's and glibc's headers (x86-64) that more than one module of src/sys
// uses, each written once here: socket families, types, flags and levels; send and receive
// flags; interface flags; mmap's protections and flags; errno values.
import koffi from 'koffi';

/** Address families (<bits/socket.h>): a socket's domain, and the family of an address in a netlink message. */
export const AF_UNSPEC = 0;
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const AF_PACKET = 17;
export const AF_XDP = 44;

/** Socket types, and the flags or'ed into one (O_NONBLOCK, O_CLOEXEC) */
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_SEQPACKET = 5;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;

/** setsockopt and getsockopt level of the options every socket has (SO_*) */
export const SOL_SOCKET = 1;

/** send and recv flags */
export const MSG_DONTWAIT = 0x40;

/** an interface's flags (<linux/if.h>): administratively up */
export const IFF_UP = 0x1;

/** mmap */
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
/** mmap's failure, (void *) -1, as koffi gives a pointer */
export const MAP_FAILED = 0xffffffffffffffffn;

export const EAGAIN: number = koffi.os.errno.EAGAIN;
export const EINTR: number = koffi.os.errno.EINTR;
export const EINVAL: number = koffi.os.errno.EINVAL;
export const EBUSY: number = koffi.os.errno.EBUSY;
export const ENOBUFS: number = koffi.os.errno.ENOBUFS;
