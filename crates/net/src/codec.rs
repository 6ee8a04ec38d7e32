//! Byte-level reading and writing for the wire format: fixed-width little-endian
//! integers, raw byte arrays, short strings and socket addresses.
//!
//! The [`Reader`] never allocates on behalf of a length it has read: callers check a
//! count against its cap (and against the bytes left) before building a vector.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::wire::DecodeError;

/// Appends encoded values to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A string of at most `u8::MAX` bytes; callers enforce their tighter caps first.
    pub(crate) fn short_str(&mut self, s: &str) {
        debug_assert!(s.len() <= u8::MAX as usize);
        self.u8(s.len() as u8);
        self.bytes(s.as_bytes());
    }
    pub(crate) fn addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.bytes(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.bytes(&ip.octets());
            }
        }
        self.u16(a.port());
    }
    pub(crate) fn opt_addr(&mut self, a: &Option<SocketAddr>) {
        match a {
            None => self.u8(0),
            Some(a) => self.addr(a),
        }
    }
}

/// Reads values from an untrusted datagram. Every method fails with
/// [`DecodeError::Truncated`] instead of reading past the end.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn short_str(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        let raw = self.take(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { what })
    }
    /// A vector count: at most `max`, and no more items than the bytes left can hold
    /// (`min_item_bytes` each), so a lying count never drives an allocation.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::TooMany {
                what,
                count: n,
                max,
            });
        }
        if n.saturating_mul(min_item_bytes) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    pub(crate) fn addr(&mut self, what: &'static str) -> Result<SocketAddr, DecodeError> {
        let tag = self.u8()?;
        self.addr_after_tag(what, tag)
    }
    pub(crate) fn opt_addr(
        &mut self,
        what: &'static str,
    ) -> Result<Option<SocketAddr>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            tag => self.addr_after_tag(what, tag).map(Some),
        }
    }
    fn addr_after_tag(&mut self, what: &'static str, tag: u8) -> Result<SocketAddr, DecodeError> {
        let ip = match tag {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return Err(DecodeError::InvalidTag { what, tag }),
        };
        let port = self.u16()?;
        Ok(SocketAddr::new(ip, port))
    }
}
