//! hyper and hyper-util errors turned into keel's error kinds and stages.

use std::error::Error as StdError;

use keel_core::{find_in_chain, find_source, Error, ErrorKind, Stage};

/// Maps a failure of hyper-util's `Client::request`: the response head never arrived.
pub(crate) fn from_client_error(err: hyper_util::client::legacy::Error) -> Error {
    // The connector's own errors already carry their kind and stage.
    if let Some(found) = find_in_chain(&err) {
        return found.clone();
    }
    if err.is_connect() {
        return Error::new(ErrorKind::Connect)
            .with_stage(Stage::Connect)
            .with_source(err);
    }
    // hyper-util's only way of saying "this request was never written" is its `Canceled`
    // kind, which it reports for a connection that closed before the request went out.
    let unsent = err.to_string() == "client error (Canceled)";
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
    let refused = h2_reason(&err) == Some(h2::Reason::REFUSED_STREAM);
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

fn h2_reason(err: &(dyn StdError + 'static)) -> Option<h2::Reason> {
    find_source::<h2::Error>(err).and_then(h2::Error::reason)
}
