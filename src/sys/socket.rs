//! TCP socket calls: create, bind, listen, accept, connect, options, the data-path sends and
//! receives, the zero-copy error queue (cmsg parsing) and socket addresses.

use super::{cvt, cvt_size, owned};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

/// `SO_ZEROCOPY` (not in every libc version).
pub const SO_ZEROCOPY: libc::c_int = 60;
pub const SO_INCOMING_NAPI_ID: libc::c_int = 56;
pub const SO_INCOMING_CPU: libc::c_int = 49;
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// A non-blocking, close-on-exec TCP socket of `sa`'s family.
pub fn new_socket(sa: &SocketAddr) -> io::Result<OwnedFd> {
    let domain = if sa.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: socket takes no pointers and returns a new descriptor (or -1).
    unsafe {
        owned(libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        ))
    }
}

pub fn bind(fd: RawFd, sa: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_sockaddr(sa);
    // SAFETY: storage is a valid sockaddr of length len, alive for the call.
    cvt(unsafe { libc::bind(fd, &storage as *const _ as *const libc::sockaddr, len) }).map(drop)
}

pub fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes no pointers.
    cvt(unsafe { libc::listen(fd, backlog) }).map(drop)
}

/// Accepts one connection as a non-blocking, close-on-exec socket. Errors are the kernel's
/// (`EAGAIN` when none is waiting).
pub fn accept(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 with null address pointers is valid (no address is asked for) and
    // returns a new descriptor (or -1).
    unsafe {
        owned(libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ))
    }
}

/// Starts a connect; a non-blocking socket answers `EINPROGRESS` (returned as the error).
pub fn connect(fd: RawFd, sa: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_sockaddr(sa);
    // SAFETY: storage is a valid sockaddr of length len, alive for the call.
    cvt(unsafe {
        libc::connect(
            fd,
            &storage as *const libc::sockaddr_storage as *const libc::sockaddr,
            len,
        )
    })
    .map(drop)
}

/// Disconnects a TCP socket at once (connect to AF_UNSPEC), purging its send queue.
pub fn disconnect(fd: RawFd) {
    // SAFETY: sockaddr is plain data; all-zero is valid.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: valid sockaddr pointer and length.
    unsafe { libc::connect(fd, &sa, std::mem::size_of::<libc::sockaddr>() as u32) };
}

/// `shutdown(SHUT_RDWR)`, errors ignored (the socket may already be down).
pub fn shutdown(fd: RawFd) {
    // SAFETY: shutdown takes no pointers.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Whether the fd is ready now for any of `events` (`POLLIN`, `POLLOUT`), without waiting.
fn ready_now(fd: RawFd, events: libc::c_short) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout (never blocks).
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Whether the socket is writable now (a finished connect), without waiting.
pub fn poll_writable(fd: RawFd) -> bool {
    ready_now(fd, libc::POLLOUT)
}

/// Whether the fd is readable now, without waiting.
pub fn poll_readable(fd: RawFd) -> bool {
    ready_now(fd, libc::POLLIN)
}

pub fn setsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: i32) -> io::Result<()> {
    // SAFETY: valid pointer to an int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    })
    .map(drop)
}

pub fn getsockopt_int(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<i32> {
    let mut val: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: valid pointers to an int and its length.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut val as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    })?;
    Ok(val)
}

/// Sets `SO_LINGER` to {on, 0 s}: closing the socket then aborts it (RST) and drops its send
/// queue.
pub fn set_linger_abort(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid option pointer and length for SO_LINGER.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// The iovecs of `IoSlice`s, for calls that take raw iovecs.
#[inline]
pub fn iovecs<'a>(iov: &'a [IoSlice<'_>]) -> &'a [libc::iovec] {
    // SAFETY: IoSlice is guaranteed ABI-compatible with iovec on unix; the result borrows
    // the same memory for the same lifetime.
    unsafe { std::slice::from_raw_parts(iov.as_ptr() as *const libc::iovec, iov.len()) }
}

/// `sendmsg` of raw iovecs. Safe because the kernel only reads the described memory (a bad
/// pointer is `EFAULT`, not undefined behaviour); the callers keep it alive for the call
/// (and, with `MSG_ZEROCOPY`, until the completion arrives).
#[inline]
pub fn sendmsg(fd: RawFd, iov: &[libc::iovec], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: msg and its iovec array live for the call; the kernel only reads through them.
    cvt_size(unsafe {
        libc::syscall(
            libc::SYS_sendmsg,
            fd as libc::c_long,
            &msg as *const libc::msghdr,
            flags as libc::c_long,
        ) as isize
    })
}

/// `readv` into borrowed buffers.
#[inline]
pub fn readv(fd: RawFd, iov: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
    // SAFETY: IoSliceMut is ABI-compatible with iovec; each describes a live, exclusively
    // borrowed, writable buffer the kernel writes at most its length into.
    cvt_size(unsafe {
        libc::syscall(
            libc::SYS_readv,
            fd as libc::c_long,
            iov.as_mut_ptr() as *mut libc::iovec,
            iov.len() as libc::c_long,
        ) as isize
    })
}

/// `recv` without waiting.
#[inline]
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length; no source address is asked for.
    cvt_size(unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd as libc::c_long,
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT as libc::c_long,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        ) as isize
    })
}

/// Sends bytes on a stream socket without waiting and without raising SIGPIPE if the peer
/// is gone.
pub fn send_nosignal(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: bytes is a live slice of `bytes.len()` readable bytes.
    cvt_size(unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    })
}

/// Reads one error-queue message: `Some((lo, hi, copied))` for a zero-copy completion,
/// `None` for another kind of message, `WouldBlock` when the queue is empty.
pub fn recv_zc_completion(fd: RawFd) -> io::Result<Option<(u32, u32, bool)>> {
    let mut control = [0u64; 16];
    // SAFETY: zeroed msghdr is valid; we only set the control buffer.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points to a control buffer we own.
    let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    let min_len =
        unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::sock_extended_err>() as u32) } as usize;
    // SAFETY: walking the control messages the kernel wrote into our buffer.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: cmsg is a valid header inside the control buffer.
        let hdr = unsafe { &*cmsg };
        let is_recverr = (hdr.cmsg_level == libc::SOL_IP && hdr.cmsg_type == libc::IP_RECVERR)
            || (hdr.cmsg_level == libc::SOL_IPV6 && hdr.cmsg_type == libc::IPV6_RECVERR);
        if is_recverr && hdr.cmsg_len as usize >= min_len {
            // SAFETY: the length check above guarantees a whole sock_extended_err; read
            // unaligned because the control buffer only guarantees cmsg alignment.
            let ee: libc::sock_extended_err = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err)
            };
            if ee.ee_origin == SO_EE_ORIGIN_ZEROCOPY && ee.ee_errno == 0 {
                let copied = ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0;
                return Ok(Some((ee.ee_info, ee.ee_data, copied)));
            }
        }
        // SAFETY: advancing within the control buffer the kernel filled.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(None)
}

fn to_sockaddr(sa: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match sa {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Ok(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unsupported address family",
        )),
    }
}

fn name_of(fd: RawFd, peer: bool) -> io::Result<SocketAddr> {
    // SAFETY: zeroed storage is valid; the kernel fills at most len bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = &mut storage as *mut _ as *mut libc::sockaddr;
    // SAFETY: p and len describe our storage.
    cvt(unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    })?;
    from_sockaddr(&storage)
}

pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, false)
}

pub fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, true)
}
