//! tls: a TLS 1.3 session with an external pre-shared key (OpenSSL) that seals and opens records in memory, never blocking.
//!
//! The session never touches a socket: ciphertext read from the network is handed to
//! [`TlsSession::feed`], ciphertext to send is taken from [`TlsSession::outgoing`] and
//! acknowledged with [`TlsSession::consumed`]. The handshake advances whenever
//! [`TlsSession::handshake`] is called with new bytes, so a poller drives it like any other
//! state machine (this kernel has no kTLS: every record is sealed here). Only TLS 1.3, only
//! TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384, no certificates: the server finds the
//! key of the identity the client offers with a [`PskLookup`] (OpenSSL's
//! `psk_find_session` callback), the client offers one identity and key (`psk_use_session`);
//! a PSK is an `SSL_SESSION` with that key as its master key and the suite its hash selects.
//! OpenSSL's crate binds neither callback: the few calls live in `ffi` below.

use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslStream,
    SslVersion,
};
use std::io::{self, Read, Write};
use std::sync::{Arc, OnceLock};

/// Largest ciphertext kept unsent before plaintext writes are held back.
pub const MAX_UNSENT_CIPHERTEXT: usize = 4 * 1024 * 1024;

/// One external PSK: the identity a client offers and the TLS PSK (its length picks the
/// suite: 32 bytes TLS_AES_128_GCM_SHA256, 48 bytes TLS_AES_256_GCM_SHA384).
#[derive(Clone)]
pub struct ExternalPsk {
    pub identity: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for ExternalPsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPsk")
            .field("identity", &self.identity)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .finish()
    }
}

impl ExternalPsk {
    /// The suite's TLS code point and OpenSSL name, or `None` for a key of another length.
    fn suite(&self) -> Option<([u8; 2], &'static str)> {
        match self.key.len() {
            32 => Some(([0x13, 0x01], "TLS_AES_128_GCM_SHA256")),
            48 => Some(([0x13, 0x02], "TLS_AES_256_GCM_SHA384")),
            _ => None,
        }
    }
}

/// How a server finds the key of an offered identity (called during the handshake, on the
/// thread driving it: it must not block).
pub trait PskLookup: Send + Sync {
    fn lookup(&self, identity: &str) -> Option<ExternalPsk>;
}

/// The TLS side of a socket: a server with its key lookup, or a client with its key.
#[derive(Clone)]
pub enum TlsOpts {
    Server(Arc<dyn PskLookup>),
    Client(ExternalPsk),
}

impl std::fmt::Debug for TlsOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(_) => f.write_str("TlsOpts::Server"),
            Self::Client(p) => f.debug_tuple("TlsOpts::Client").field(p).finish(),
        }
    }
}

/// The memory "BIO" OpenSSL reads ciphertext from and writes ciphertext to.
#[derive(Default)]
struct CipherBuffers {
    incoming: Vec<u8>,
    read_at: usize,
    outgoing: Vec<u8>,
    sent: usize,
    eof: bool,
}

impl Read for CipherBuffers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = &self.incoming[self.read_at..];
        if avail.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.read_at += n;
        if self.read_at == self.incoming.len() {
            self.incoming.clear();
            self.read_at = 0;
        }
        Ok(n)
    }
}

impl Write for CipherBuffers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sent > 0 && self.sent == self.outgoing.len() {
            self.outgoing.clear();
            self.sent = 0;
        }
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsState {
    Handshaking,
    Established,
    /// The handshake or a record failed; the connection must close (after sending the alert
    /// left in `outgoing`).
    Failed,
}

/// One TLS 1.3 PSK session over memory buffers.
pub struct TlsSession {
    stream: SslStream<CipherBuffers>,
    state: TlsState,
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("TLS: {e}"))
}

/// Ex-data slots of an `SSL`: the server's lookup, the identity it accepted, the client's key.
struct Slots {
    lookup: openssl::ex_data::Index<Ssl, Arc<dyn PskLookup>>,
    accepted: openssl::ex_data::Index<Ssl, String>,
    client: openssl::ex_data::Index<Ssl, ExternalPsk>,
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| Slots {
        lookup: Ssl::new_ex_index().expect("OpenSSL ex-data index"),
        accepted: Ssl::new_ex_index().expect("OpenSSL ex-data index"),
        client: Ssl::new_ex_index().expect("OpenSSL ex-data index"),
    })
}

/// The shared server context: TLS 1.3 only, both suites, no tickets, the PSK callback.
fn server_context() -> io::Result<SslContext> {
    static CTX: OnceLock<Result<SslContext, String>> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut b = base_context().map_err(|e| e.to_string())?;
        b.set_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384")
            .map_err(|e| e.to_string())?;
        ffi::set_find_session_callback(&mut b);
        Ok(b.build())
    })
    .clone()
    .map_err(tls_error)
}

fn base_context() -> Result<SslContextBuilder, openssl::error::ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_options(SslOptions::NO_TICKET);
    b.set_num_tickets(0)?;
    Ok(b)
}

impl TlsSession {
    pub fn new(opts: &TlsOpts) -> io::Result<Self> {
        let mut ssl = match opts {
            TlsOpts::Server(lookup) => {
                let ctx = server_context()?;
                let mut ssl = Ssl::new(&ctx).map_err(tls_error)?;
                ssl.set_ex_data(slots().lookup, lookup.clone());
                ssl.set_accept_state();
                ssl
            }
            TlsOpts::Client(psk) => {
                let (_, suite) = psk.suite().ok_or_else(|| {
                    tls_error(format!("a PSK of {} bytes selects no suite", psk.key.len()))
                })?;
                let mut b = base_context().map_err(tls_error)?;
                b.set_ciphersuites(suite).map_err(tls_error)?;
                ffi::set_use_session_callback(&mut b);
                let mut ssl = Ssl::new(&b.build()).map_err(tls_error)?;
                ssl.set_ex_data(slots().client, psk.clone());
                ssl.set_connect_state();
                ssl
            }
        };
        ssl.set_ex_data(slots().accepted, String::new());
        let stream = SslStream::new(ssl, CipherBuffers::default()).map_err(tls_error)?;
        Ok(Self {
            stream,
            state: TlsState::Handshaking,
        })
    }

    pub fn state(&self) -> TlsState {
        self.state
    }

    /// Ciphertext received from the peer.
    pub fn feed(&mut self, ciphertext: &[u8]) {
        let b = self.stream.get_mut();
        if b.read_at > 0 && b.read_at == b.incoming.len() {
            b.incoming.clear();
            b.read_at = 0;
        }
        b.incoming.extend_from_slice(ciphertext);
    }

    /// The peer closed its side: no more ciphertext will come.
    pub fn feed_eof(&mut self) {
        self.stream.get_mut().eof = true;
    }

    /// Received ciphertext not yet opened, or plaintext opened but not yet read.
    pub fn has_buffered(&self) -> bool {
        let b = self.stream.get_ref();
        b.read_at < b.incoming.len() || self.stream.ssl().pending() > 0
    }

    /// Bytes of received ciphertext not yet opened.
    pub fn incoming_len(&self) -> usize {
        let b = self.stream.get_ref();
        b.incoming.len() - b.read_at
    }

    /// Ciphertext to send.
    pub fn outgoing(&self) -> &[u8] {
        let b = self.stream.get_ref();
        &b.outgoing[b.sent..]
    }

    /// `n` bytes of `outgoing()` were sent.
    pub fn consumed(&mut self, n: usize) {
        let b = self.stream.get_mut();
        b.sent = (b.sent + n).min(b.outgoing.len());
        if b.sent == b.outgoing.len() {
            b.outgoing.clear();
            b.sent = 0;
        }
    }

    /// Advances the handshake with what was fed: `Ok(true)` once established.
    pub fn handshake(&mut self) -> io::Result<bool> {
        match self.state {
            TlsState::Established => return Ok(true),
            TlsState::Failed => return Err(tls_error("the session failed")),
            TlsState::Handshaking => {}
        }
        match self.stream.do_handshake() {
            Ok(()) => {
                self.state = TlsState::Established;
                Ok(true)
            }
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                if self.stream.get_ref().eof {
                    self.state = TlsState::Failed;
                    return Err(tls_error(
                        "the peer closed the connection during the handshake",
                    ));
                }
                Ok(false)
            }
            Err(e) => {
                self.state = TlsState::Failed;
                Err(tls_error(format!("handshake failed: {e}")))
            }
        }
    }

    /// Opens received records into `buf`: `Ok(0)` at the end of the stream, `WouldBlock`
    /// when more ciphertext is needed.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if !self.handshake()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.stream.ssl_read(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
            Err(e) if e.code() == ErrorCode::WANT_READ => {
                if self.stream.get_ref().eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            }
            Err(e) => {
                self.state = TlsState::Failed;
                Err(tls_error(format!("record refused: {e}")))
            }
        }
    }

    /// Seals `data` into records appended to `outgoing()` (all of it, once established).
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if !self.handshake()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut done = 0;
        while done < data.len() {
            match self.stream.ssl_write(&data[done..]) {
                Ok(n) => done += n,
                Err(e) => {
                    self.state = TlsState::Failed;
                    return Err(tls_error(format!("sealing failed: {e}")));
                }
            }
        }
        Ok(done)
    }

    /// The identity the server accepted (server side), or the one offered (client side).
    pub fn identity(&self) -> Option<&str> {
        let ssl = self.stream.ssl();
        if let Some(p) = ssl.ex_data(slots().client) {
            return Some(&p.identity);
        }
        ssl.ex_data(slots().accepted)
            .filter(|s| !s.is_empty())
            .map(String::as_str)
    }

    /// The negotiated suite's name, once established.
    pub fn cipher_name(&self) -> Option<&'static str> {
        self.stream.ssl().current_cipher().map(|c| c.name())
    }
}

/// The server side of `psk_find_session`: the key of `identity`, recorded as accepted.
fn find_psk(ssl: &mut SslRef, identity: &[u8]) -> Option<ExternalPsk> {
    let identity = std::str::from_utf8(identity).ok()?;
    let lookup = ssl.ex_data(slots().lookup)?.clone();
    let psk = lookup.lookup(identity)?;
    psk.suite()?;
    ssl.set_ex_data(slots().accepted, identity.to_string());
    Some(psk)
}

mod ffi {
    //! The OpenSSL calls the `openssl` crate does not bind (TLS 1.3 external PSK sessions).

    use super::{find_psk, slots, ExternalPsk};
    use foreign_types::ForeignTypeRef;
    use openssl::ssl::{SslContextBuilder, SslRef};
    use openssl_sys::{EVP_MD, SSL, SSL_CIPHER, SSL_CTX, SSL_SESSION};
    use std::os::raw::{c_int, c_uchar};

    type FindSessionCb =
        unsafe extern "C" fn(*mut SSL, *const c_uchar, usize, *mut *mut SSL_SESSION) -> c_int;
    type UseSessionCb = unsafe extern "C" fn(
        *mut SSL,
        *const EVP_MD,
        *mut *const c_uchar,
        *mut usize,
        *mut *mut SSL_SESSION,
    ) -> c_int;

    extern "C" {
        fn SSL_CTX_set_psk_find_session_callback(ctx: *mut SSL_CTX, cb: Option<FindSessionCb>);
        fn SSL_CTX_set_psk_use_session_callback(ctx: *mut SSL_CTX, cb: Option<UseSessionCb>);
        fn SSL_SESSION_new() -> *mut SSL_SESSION;
        fn SSL_SESSION_free(s: *mut SSL_SESSION);
        fn SSL_SESSION_set1_master_key(
            s: *mut SSL_SESSION,
            key: *const c_uchar,
            len: usize,
        ) -> c_int;
        fn SSL_SESSION_set_cipher(s: *mut SSL_SESSION, cipher: *const SSL_CIPHER) -> c_int;
        fn SSL_SESSION_set_protocol_version(s: *mut SSL_SESSION, version: c_int) -> c_int;
        fn SSL_CIPHER_find(ssl: *mut SSL, code: *const c_uchar) -> *const SSL_CIPHER;
    }

    const TLS1_3_VERSION: c_int = 0x0304;

    pub(super) fn set_find_session_callback(b: &mut SslContextBuilder) {
        // SAFETY: `b.as_ptr()` is the live context being built; the callback is a plain fn.
        unsafe { SSL_CTX_set_psk_find_session_callback(b.as_ptr(), Some(find_session)) };
    }

    pub(super) fn set_use_session_callback(b: &mut SslContextBuilder) {
        // SAFETY: as above.
        unsafe { SSL_CTX_set_psk_use_session_callback(b.as_ptr(), Some(use_session)) };
    }

    /// A new TLS 1.3 session holding `psk` as its resumption key, or null.
    fn new_session(ssl: *mut SSL, psk: &ExternalPsk) -> *mut SSL_SESSION {
        let Some((code, _)) = psk.suite() else {
            return std::ptr::null_mut();
        };
        // SAFETY: `ssl` is the live SSL of the running handshake; `code` is 2 readable bytes.
        let cipher = unsafe { SSL_CIPHER_find(ssl, code.as_ptr()) };
        if cipher.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: a fresh session is ours until handed to OpenSSL (or freed on failure); the
        // key is copied by set1_master_key.
        unsafe {
            let sess = SSL_SESSION_new();
            if sess.is_null() {
                return sess;
            }
            if SSL_SESSION_set1_master_key(sess, psk.key.as_ptr(), psk.key.len()) != 1
                || SSL_SESSION_set_cipher(sess, cipher) != 1
                || SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION) != 1
            {
                SSL_SESSION_free(sess);
                return std::ptr::null_mut();
            }
            sess
        }
    }

    /// Server: OpenSSL asks for the session of the identity a ClientHello offers. Returning 0
    /// aborts the handshake (an unknown identity: no other way in without a certificate).
    unsafe extern "C" fn find_session(
        ssl: *mut SSL,
        identity: *const c_uchar,
        len: usize,
        sess: *mut *mut SSL_SESSION,
    ) -> c_int {
        let run = || {
            // SAFETY: OpenSSL passes the live SSL, an identity of `len` readable bytes and a
            // writable session slot, all valid for this call.
            let (ssl_ref, identity) = unsafe {
                *sess = std::ptr::null_mut();
                (
                    SslRef::from_ptr_mut(ssl),
                    std::slice::from_raw_parts(identity, len),
                )
            };
            let Some(psk) = find_psk(ssl_ref, identity) else {
                return 0;
            };
            let s = new_session(ssl, &psk);
            if s.is_null() {
                return 0;
            }
            // SAFETY: the slot is writable (above); OpenSSL owns the session from here.
            unsafe { *sess = s };
            1
        };
        std::panic::catch_unwind(run).unwrap_or(0)
    }

    /// Client: OpenSSL asks for the identity and session to offer (`md` set when it must use
    /// that hash, after a HelloRetryRequest).
    unsafe extern "C" fn use_session(
        ssl: *mut SSL,
        _md: *const EVP_MD,
        id: *mut *const c_uchar,
        idlen: *mut usize,
        sess: *mut *mut SSL_SESSION,
    ) -> c_int {
        let run = || {
            // SAFETY: OpenSSL passes the live SSL and writable out-slots for this call.
            let ssl_ref = unsafe {
                *sess = std::ptr::null_mut();
                *id = std::ptr::null();
                *idlen = 0;
                SslRef::from_ptr_mut(ssl)
            };
            let Some(psk) = ssl_ref.ex_data(slots().client) else {
                return 0;
            };
            let s = new_session(ssl, psk);
            if s.is_null() {
                return 0;
            }
            // SAFETY: the identity lives in the SSL's ex-data, which outlives the handshake;
            // OpenSSL owns the session from here.
            unsafe {
                *id = psk.identity.as_ptr();
                *idlen = psk.identity.len();
                *sess = s;
            }
            1
        };
        std::panic::catch_unwind(run).unwrap_or(0)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PSK lookup knowing one key (the ssl socket tests use it too).
    pub(crate) struct OneKey(pub(crate) ExternalPsk);

    impl PskLookup for OneKey {
        fn lookup(&self, identity: &str) -> Option<ExternalPsk> {
            (identity == self.0.identity).then(|| self.0.clone())
        }
    }

    fn pump(a: &mut TlsSession, b: &mut TlsSession) {
        let out = a.outgoing().to_vec();
        a.consumed(out.len());
        b.feed(&out);
    }

    /// Runs a handshake in memory; returns both sides, or the first error.
    fn handshake(
        server_key: ExternalPsk,
        client_key: ExternalPsk,
    ) -> io::Result<(TlsSession, TlsSession)> {
        let mut s = TlsSession::new(&TlsOpts::Server(Arc::new(OneKey(server_key))))?;
        let mut c = TlsSession::new(&TlsOpts::Client(client_key))?;
        for _ in 0..10 {
            let cd = c.handshake()?;
            pump(&mut c, &mut s);
            let sd = s.handshake()?;
            pump(&mut s, &mut c);
            if cd && sd {
                return Ok((s, c));
            }
        }
        Err(io::Error::other("handshake did not finish"))
    }

    #[test]
    fn both_suites_carry_data_and_wrong_keys_fail() {
        for len in [32, 48] {
            let key = ExternalPsk {
                identity: "NVMe0R01 nqn.h nqn.s".into(),
                key: vec![7; len],
            };
            let (mut s, mut c) = handshake(key.clone(), key.clone()).unwrap();
            let expected = if len == 32 {
                "TLS_AES_128_GCM_SHA256"
            } else {
                "TLS_AES_256_GCM_SHA384"
            };
            assert_eq!(s.cipher_name(), Some(expected));
            assert_eq!(s.identity(), Some("NVMe0R01 nqn.h nqn.s"));
            let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            c.write(&data).unwrap();
            pump(&mut c, &mut s);
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, data);
            // Same identity, another key: the binder does not verify.
            let wrong = ExternalPsk {
                key: vec![8; len],
                ..key.clone()
            };
            assert!(handshake(key.clone(), wrong).is_err());
            // Unknown identity.
            let other = ExternalPsk {
                identity: "NVMe0R01 nqn.other nqn.s".into(),
                ..key.clone()
            };
            assert!(handshake(key, other).is_err());
        }
    }

    #[test]
    fn garbage_and_plaintext_fail_the_server_handshake() {
        let lookup = Arc::new(OneKey(ExternalPsk {
            identity: "x".into(),
            key: vec![1; 32],
        }));
        let mut s = TlsSession::new(&TlsOpts::Server(lookup.clone())).unwrap();
        // An NVMe/TCP ICReq header (plaintext) is not a TLS record.
        s.feed(&[0x00, 0x00, 0x80, 0x00, 0x80, 0, 0, 0]);
        assert!(s.handshake().is_err());
        assert_eq!(s.state(), TlsState::Failed);
        let mut s = TlsSession::new(&TlsOpts::Server(lookup)).unwrap();
        s.feed(&[0x16, 0x03, 0x01]);
        assert!(!s.handshake().unwrap(), "a partial record waits for more");
        s.feed_eof();
        assert!(s.handshake().is_err());
    }
}
