//! Cookies: a [`CookieStore`] behind the pipeline.
//!
//! Sits inside the redirect layer, so it is asked before every attempt and every hop, each
//! for its own URL, and sees every response head (a `3xx` too) before the redirect layer moves
//! the request on.

use std::sync::Arc;

use http::header::{HeaderValue, COOKIE, SET_COOKIE};

use super::pipeline::{Action, Policy, PolicyContext};
use crate::cookie::CookieStore;
use crate::machine::outcome::Outcome;

/// Adds the store's cookies to each attempt's `Cookie` header, and gives the store each
/// response's `Set-Cookie`s.
///
/// A `Cookie` header already on the request (the caller's, a policy's, or the client's default
/// credential) is kept, with the store's cookies after it. The layer remembers what it put in
/// the header, so that before the next attempt it knows what is its own: when the redirect
/// layer has stripped the header (a hop to another origin), the caller's part is gone with it,
/// and only the store's cookies for the new URL go.
pub(crate) struct CookieLayer {
    store: Arc<dyn CookieStore>,
    /// The `Cookie` header as it was before the layer added to it.
    own: Option<HeaderValue>,
    /// The `Cookie` header as the layer left it for the last attempt.
    sent: Option<HeaderValue>,
}

impl CookieLayer {
    pub(crate) fn new(store: Arc<dyn CookieStore>) -> Self {
        Self {
            store,
            own: None,
            sent: None,
        }
    }
}

/// The request's `Cookie` values as one (HTTP/1.1 allows one `Cookie` header: several are
/// joined with `; `).
fn joined(headers: &http::HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(COOKIE).iter();
    let first = values.next()?;
    let mut line = first.as_bytes().to_vec();
    for value in values {
        line.extend_from_slice(b"; ");
        line.extend_from_slice(value.as_bytes());
    }
    let mut value = HeaderValue::from_bytes(&line).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Policy for CookieLayer {
    fn before_attempt(&mut self, cx: &mut PolicyContext<'_>) -> Action {
        let current = joined(&cx.request.headers);
        if current != self.sent {
            // Not what the layer left: someone else set it (or the redirect layer took it).
            self.own = current.clone();
        }
        let now = cx.now_system();
        let jar = self.store.cookies(cx.request.url(), now);
        let value = match (&self.own, jar) {
            (own, None) => own.clone(),
            (None, Some(jar)) => {
                // The client's default Cookie (a credential for the base URL's origin) is
                // merged only into requests without one: put it in front of the jar's here.
                let default = cx
                    .config
                    .scoped_headers_for(cx.request.url(), cx.record.hops())
                    .and_then(joined);
                match default {
                    Some(default) => concat(&default, &jar),
                    None => Some(jar),
                }
            }
            (Some(own), Some(jar)) => concat(own, &jar),
        };
        if value != current {
            let headers = &mut cx.request.headers;
            headers.remove(COOKIE);
            if let Some(value) = &value {
                headers.insert(COOKIE, value.clone());
            }
        }
        self.sent = value;
        Action::Proceed
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        let Outcome::Response { headers, .. } = outcome else {
            return Action::Proceed;
        };
        let mut values = headers.get_all(SET_COOKIE).iter().peekable();
        if values.peek().is_some() {
            let now = cx.now_system();
            self.store.set_cookies(cx.request.url(), &mut values, now);
        }
        Action::Proceed
    }
}

/// `a; b`, marked sensitive.
fn concat(a: &HeaderValue, b: &HeaderValue) -> Option<HeaderValue> {
    let mut line = Vec::with_capacity(a.len() + 2 + b.len());
    line.extend_from_slice(a.as_bytes());
    line.extend_from_slice(b"; ");
    line.extend_from_slice(b.as_bytes());
    let mut value = HeaderValue::from_bytes(&line).ok()?;
    value.set_sensitive(true);
    Some(value)
}
