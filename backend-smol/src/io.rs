//! futures-io streams (async-io sockets, futures-rustls) as hyper's `rt::Read`/`rt::Write`.
//!
//! `smol-hyper` (0.1) has the same adapter, but it zero-fills hyper's whole unfilled buffer on
//! every read (hyper grows that buffer to hundreds of KiB on a fast stream) through `unsafe`.
//! This one stays safe: it reads into a small staging buffer it owns, initialised once, and
//! copies only the bytes that arrived into hyper's buffer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures_io::{AsyncRead, AsyncWrite};
use hyper::rt::ReadBufCursor;

/// The most a single read asks of the stream. A TLS record is at most 16 KiB of plaintext.
const STAGING: usize = 32 * 1024;

/// A futures-io stream that hyper can drive.
#[derive(Debug)]
pub(crate) struct HyperIo<T> {
    inner: T,
    staging: Vec<u8>,
    /// Set when a read fails on the server's TLS alert refusing the handshake (TLS 1.3 sends it
    /// after the client's side is done): hyper then fails the requests waiting on the
    /// connection as "not ready", and this says why.
    refusal: keel_core::tls::RefusalWatch,
}

impl<T> HyperIo<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            staging: Vec::new(),
            refusal: keel_core::tls::RefusalWatch::new(),
        }
    }

    /// Whether the server refused the TLS handshake, as this stream's reads found out.
    pub(crate) fn refusal(&self) -> keel_core::tls::RefusalWatch {
        self.refusal.clone()
    }

    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for HyperIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(STAGING);
        if want == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.staging.len() < want {
            this.staging.resize(want, 0);
        }
        let n = match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.staging[..want])) {
            Ok(n) => n,
            Err(e) => {
                this.refusal.record(&e);
                return Poll::Ready(Err(e));
            }
        };
        // A reader that claims more than it was given is broken; don't let it panic us.
        let n = n.min(want);
        buf.put_slice(&this.staging[..n]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for HyperIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    /// async-io sockets and futures-rustls both implement vectored writes.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::mem::MaybeUninit;

    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;
    use hyper::rt::{Read as _, ReadBuf, Write as _};

    use super::*;

    /// Reads everything through the adapter with a hyper buffer of `cap` bytes.
    fn read_all(io: &mut HyperIo<Cursor<Vec<u8>>>, cap: usize) -> Vec<u8> {
        let mut out = Vec::new();
        block_on(async {
            loop {
                let mut storage = vec![MaybeUninit::<u8>::uninit(); cap];
                let mut buf = ReadBuf::uninit(&mut storage);
                poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, buf.unfilled()))
                    .await
                    .unwrap();
                if buf.filled().is_empty() {
                    return;
                }
                assert!(buf.filled().len() <= cap.min(STAGING));
                out.extend_from_slice(buf.filled());
            }
        });
        out
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn reads_arrive_whole_and_in_order_whatever_the_buffer_size() {
        for (len, cap) in [(0, 8), (10, 3), (100_000, 8192), (100_000, 1 << 20), (7, 7)] {
            let mut io = HyperIo::new(Cursor::new(data(len)));
            assert_eq!(read_all(&mut io, cap), data(len), "len {len}, cap {cap}");
        }
    }

    #[test]
    fn a_full_buffer_reads_nothing_and_is_not_eof() {
        let mut io = HyperIo::new(Cursor::new(data(10)));
        let mut storage: [MaybeUninit<u8>; 0] = [];
        let mut buf = ReadBuf::uninit(&mut storage);
        block_on(poll_fn(|cx| {
            Pin::new(&mut io).poll_read(cx, buf.unfilled())
        }))
        .unwrap();
        assert_eq!(
            io.get_ref().position(),
            0,
            "the stream was read into nowhere"
        );
    }

    #[test]
    fn writes_pass_through_and_shutdown_closes() {
        let mut io = HyperIo::new(Cursor::new(Vec::new()));
        block_on(async {
            let n = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"hello "))
                .await
                .unwrap();
            assert_eq!(n, 6);
            let bufs = [io::IoSlice::new(b"vec"), io::IoSlice::new(b"tored")];
            let mut written = 0;
            while written < 8 {
                written += poll_fn(|cx| Pin::new(&mut io).poll_write_vectored(cx, &bufs))
                    .await
                    .unwrap();
                if written < 8 {
                    // The cursor writes one slice at a time; finish with plain writes.
                    let rest = &b"vectored"[written..];
                    written += poll_fn(|cx| Pin::new(&mut io).poll_write(cx, rest))
                        .await
                        .unwrap();
                }
            }
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
                .await
                .unwrap();
            poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx))
                .await
                .unwrap();
        });
        assert_eq!(io.get_ref().get_ref().as_slice(), b"hello vectored");
    }
}
