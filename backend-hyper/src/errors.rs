//! hyper and hyper-util errors turned into keel's error kinds and stages.

use std::error::Error as StdError;

use keel_core::{find_in_chain, find_source, Error, ErrorKind, Stage};

/// Maps a failure of hyper-util's `Client::request`: the response head never arrived.
pub(crate) fn from_client_error(err: hyper_util::client::legacy::Error) -> Error {
    // The connector's own errors already carry their kind and stage.
    if let Some(found) = find_in_chain(&err) {
        return found.clone();
    }
    if keel_core::tls::is_handshake_alert(&err) {
        // TLS 1.3: the server refused the handshake (a client certificate, most often) after
        // the client had finished its side; it never read the request.
        return keel_core::tls::handshake_refused(err);
    }
    if err.is_connect() {
        return Error::new(ErrorKind::Connect)
            .with_stage(Stage::Connect)
            .with_source(err);
    }
    let unsent = never_written(&err);
    let hyper_err = find_source::<hyper::Error>(&err);
    let (kind, stage) = match hyper_err {
        Some(h) if h.is_user() || h.is_body_write_aborted() => {
            // The caller's request body stream failed: our side, not the server's.
            (ErrorKind::InvalidRequest, Stage::SendRequest)
        }
        Some(h) if h.is_parse() || h.is_parse_status() => (ErrorKind::Protocol, Stage::AwaitHead),
        _ if unsent => (ErrorKind::Body, Stage::SendRequest),
        _ => (ErrorKind::Body, Stage::AwaitHead),
    };
    let refused = h2_unprocessed(&err);
    let mapped = Error::new(kind).with_stage(stage).with_source(err);
    if unsent || refused {
        mapped.with_unsent()
    } else {
        mapped
    }
}

/// Maps a failure while streaming a response body.
pub(crate) fn from_body_error(err: hyper::Error) -> Error {
    let kind = if err.is_parse() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Body
    };
    Error::new(kind).with_stage(Stage::Body).with_source(err)
}

/// Whether hyper gave the request back without writing any of it.
///
/// hyper makes a `Canceled` error ([`hyper::Error::is_canceled`]) only for a request it never
/// started to write: one still queued when its connection closed or failed, or sent to a
/// connection that was not ready. hyper-util reports those as its own `Canceled` kind, with
/// hyper's error as the source.
fn never_written(err: &(dyn StdError + 'static)) -> bool {
    find_source::<hyper::Error>(err).is_some_and(hyper::Error::is_canceled)
}

/// Whether HTTP/2 says the server never processed the stream (RFC 9113, 8.7), so it is safe
/// to send again whatever its method: the server refused it (RST_STREAM `REFUSED_STREAM`), or
/// its GOAWAY named a last processed stream below this one (h2 fails exactly those streams,
/// and the ones opened after the GOAWAY, with the peer's GOAWAY; a processed stream the
/// connection then loses fails with an I/O error instead).
fn h2_unprocessed(err: &(dyn StdError + 'static)) -> bool {
    find_source::<h2::Error>(err).is_some_and(|e| {
        e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
    })
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::io;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper::rt::{Read, ReadBufCursor, Write};

    use super::*;

    /// Wraps an error as hyper-util does: its own error, hyper's as the source.
    #[derive(Debug)]
    struct ClientError(hyper::Error);

    impl fmt::Display for ClientError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error")
        }
    }

    impl StdError for ClientError {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    /// A connection that takes the request, then reads end-of-file: the server closed it
    /// after the request went out.
    #[derive(Default)]
    struct ClosesAfterRequest {
        written: bool,
        reader: Option<Waker>,
    }

    impl Read for ClosesAfterRequest {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            _: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            if self.written {
                return Poll::Ready(Ok(()));
            }
            self.reader = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    impl Write for ClosesAfterRequest {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.written = true;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn request() -> http::Request<Empty<Bytes>> {
        http::Request::post("/").body(Empty::new()).unwrap()
    }

    #[tokio::test]
    async fn a_request_hyper_gave_back_is_unsent() {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(ClosesAfterRequest::default())
                .await
                .unwrap();
        // The connection is gone before the request could be written.
        drop(conn);
        let err = sender.send_request(request()).await.unwrap_err();
        assert!(err.is_canceled(), "{err:?}");
        assert!(never_written(&ClientError(err)));
    }

    #[tokio::test]
    async fn a_request_written_before_the_close_is_not() {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(ClosesAfterRequest::default())
                .await
                .unwrap();
        let (response, _) = tokio::join!(sender.send_request(request()), conn);
        let err = response.unwrap_err();
        assert!(!err.is_canceled(), "{err:?}");
        assert!(!never_written(&ClientError(err)));
        assert!(!never_written(&io::Error::other("not hyper's")));
    }
}
