//! Cookie stores: where a client keeps the cookies servers set, and how it finds those a
//! request carries.
//!
//! Off by default. [`ClientBuilder::cookies(true)`](crate::ClientBuilder::cookies) gives a
//! client a fresh in-memory [`Jar`]; [`ClientBuilder::cookie_store`](crate::ClientBuilder::cookie_store)
//! takes any [`CookieStore`]: a shared `Arc<Jar>` to look into, or a store of your own that
//! persists cookies.
//!
//! With a store, every attempt and every redirect hop asks it for the cookies of its own URL,
//! and every response head (a `3xx` too) gives it its `Set-Cookie`s. The rules that decide which
//! cookies go where are RFC 6265's, in [`machine::cookies`](crate::machine::cookies): a cookie
//! goes only to hosts and paths it matches, so a redirect to another site never takes another
//! site's cookies along. A `Cookie` header the caller sets on a request is a credential like
//! `Authorization`: it stays on its origin, and the store's cookies are added to it.
//! Cookie values never show in `Debug` output or logs.
//!
//! ```
//! # fn demo<T: keel_core::Backend>() -> Result<(), keel_core::Error> {
//! use std::sync::Arc;
//! use keel_core::cookie::Jar;
//!
//! let jar = Arc::new(Jar::new());
//! let client = keel_core::Client::<T>::builder()
//!     .base_url("https://api.example.com")
//!     .cookie_store(jar.clone())
//!     .build()?;
//! // ... after a login, the session cookie is in `jar`, and every later request carries it.
//! # let _ = client; Ok(()) }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use http::header::HeaderValue;
use http::Uri;

use crate::machine::cookies::{Cookie, CookieJar};

/// Where a client keeps cookies: told every `Set-Cookie` a response brings, asked for the
/// `Cookie` header of every request.
///
/// Called on the hot path, once per attempt and once per response that sets cookies, from any
/// thread: keep both methods quick and never block on I/O in them (a store that persists
/// cookies writes in the background, or keeps a [`CookieJar`] in memory and saves it now and
/// then).
///
/// # Example
///
/// A store that keeps a [`CookieJar`] and counts what it is given, the way a persistent store
/// would note that it has something to save:
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Mutex;
/// use std::time::SystemTime;
/// use http::{HeaderValue, Uri};
/// use keel_core::cookie::CookieStore;
/// use keel_core::machine::cookies::CookieJar;
///
/// #[derive(Default)]
/// struct Saving {
///     jar: Mutex<CookieJar>,
///     unsaved: AtomicUsize,
/// }
///
/// impl CookieStore for Saving {
///     fn set_cookies(&self, url: &Uri, set_cookies: &mut dyn Iterator<Item = &HeaderValue>, now: SystemTime) {
///         let mut jar = self.jar.lock().unwrap();
///         for value in set_cookies {
///             if jar.store(url, value.as_bytes(), now).is_ok() {
///                 self.unsaved.fetch_add(1, Ordering::Relaxed);
///             }
///         }
///     }
///
///     fn cookies(&self, url: &Uri, now: SystemTime) -> Option<HeaderValue> {
///         self.jar.lock().unwrap().header(url, now)
///     }
/// }
///
/// let store = Saving::default();
/// let url: Uri = "https://api.example.com/login".parse().unwrap();
/// let now = SystemTime::now();
/// let set = [HeaderValue::from_static("sid=1; Path=/")];
/// store.set_cookies(&url, &mut set.iter(), now);
/// assert_eq!(store.cookies(&url, now).unwrap(), "sid=1");
/// assert_eq!(store.unsaved.load(Ordering::Relaxed), 1);
/// ```
pub trait CookieStore: Send + Sync + 'static {
    /// Takes the `Set-Cookie` values of a response from `url`, received at `now`. Values that
    /// are malformed or not allowed for `url` must be ignored.
    fn set_cookies(
        &self,
        url: &Uri,
        set_cookies: &mut dyn Iterator<Item = &HeaderValue>,
        now: SystemTime,
    );

    /// The `Cookie` header a request to `url` carries at `now`, or `None`. Mark the value
    /// [sensitive](HeaderValue::set_sensitive) so it never prints.
    fn cookies(&self, url: &Uri, now: SystemTime) -> Option<HeaderValue>;
}

impl<S: CookieStore + ?Sized> CookieStore for Arc<S> {
    fn set_cookies(
        &self,
        url: &Uri,
        set_cookies: &mut dyn Iterator<Item = &HeaderValue>,
        now: SystemTime,
    ) {
        (**self).set_cookies(url, set_cookies, now);
    }

    fn cookies(&self, url: &Uri, now: SystemTime) -> Option<HeaderValue> {
        (**self).cookies(url, now)
    }
}

/// The provided [`CookieStore`]: a [`CookieJar`] in memory, behind a lock. Its cookies last
/// as long as it does.
///
/// Share it (`Arc<Jar>`) to look at the cookies a client holds, to add some, or to save them:
///
/// ```
/// use std::time::SystemTime;
/// use keel_core::cookie::{CookieStore, Jar};
///
/// let jar = Jar::new();
/// let url = "https://api.example.com/".parse().unwrap();
/// let now = SystemTime::now();
/// jar.add(&url, "sid=abc; Secure", now);
/// assert_eq!(jar.cookies(&url, now).unwrap(), "sid=abc");
/// let saved: Vec<String> = jar.snapshot().iter().map(|c| c.name().to_owned()).collect();
/// assert_eq!(saved, ["sid"]);
/// ```
#[derive(Default)]
pub struct Jar {
    inner: Mutex<CookieJar>,
}

impl Jar {
    /// An empty jar with the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store around `jar` (one with other limits, a public suffix list, or cookies restored
    /// from storage).
    pub fn from_jar(jar: CookieJar) -> Self {
        Self {
            inner: Mutex::new(jar),
        }
    }

    /// Stores one `Set-Cookie` value as if a response from `url` had sent it at `now`; returns
    /// whether it was kept (or, expired, deleted the cookie it names).
    pub fn add(&self, url: &Uri, set_cookie: &str, now: SystemTime) -> bool {
        self.lock().store(url, set_cookie.as_bytes(), now).is_ok()
    }

    /// A copy of every cookie held (expired ones not dropped yet included).
    pub fn snapshot(&self) -> Vec<Cookie> {
        self.lock().iter().cloned().collect()
    }

    /// Drops every cookie.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The jar itself, for anything else (held locked: keep it short).
    pub fn lock(&self) -> MutexGuard<'_, CookieJar> {
        // A panic while holding the lock can't leave the jar half-updated in a way that
        // matters: go on with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CookieStore for Jar {
    fn set_cookies(
        &self,
        url: &Uri,
        set_cookies: &mut dyn Iterator<Item = &HeaderValue>,
        now: SystemTime,
    ) {
        let mut jar = self.lock();
        for value in set_cookies {
            if let Err(rejection) = jar.store(url, value.as_bytes(), now) {
                // The name and value stay out of logs: the value is a credential.
                tracing::debug!(target: "keel::cookies", url = %crate::redact::url(url),
                    %rejection, "cookie ignored");
            }
        }
    }

    fn cookies(&self, url: &Uri, now: SystemTime) -> Option<HeaderValue> {
        self.lock().header(url, now)
    }
}

impl fmt::Debug for Jar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jar").field("jar", &*self.lock()).finish()
    }
}
