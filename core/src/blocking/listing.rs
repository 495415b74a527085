//! Paginated listings as an [`Iterator`], and downloads, on the blocking client.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::Handle;
use crate::client::{Checksum, DownloadReport, Progress};
use crate::error::Error;
use crate::machine::paginate::Checkpoint;

/// The items of a paginated listing, as an [`Iterator`]: the async [`crate::Paginate`], each
/// `next` run on the client's driver thread.
///
/// Lazy as the async stream is: a page is fetched when its first item is asked for (or, with
/// [`prefetch`](Self::prefetch), while the one before is read). Each page is a call through
/// the client's pipeline, with its retries and time limits; the iterator ends after the first
/// error it yields. [`checkpoint`](Self::checkpoint) says where to resume after a crash.
///
/// ```
/// # fn demo<T: keel_core::blocking::Runtime>(client: keel_core::blocking::Client<T>) -> Result<(), keel_core::Error> {
/// use keel_core::machine::paginate::Strategy;
///
/// #[derive(serde::Deserialize)]
/// struct Issue { number: u64 }
///
/// for issue in client.get("/repos/o/r/issues?per_page=100").paginate::<Issue>(Strategy::link_header()) {
///     println!("#{}", issue?.number);
/// }
/// # Ok(()) }
/// ```
#[must_use = "iterators do nothing unless read"]
pub struct Paginate<I> {
    /// The async stream; lent to the driver while an item is read.
    inner: Option<crate::Paginate<I>>,
    handle: Arc<Handle>,
    /// An error of the driver, given once.
    failed: Option<Error>,
}

impl<I: DeserializeOwned + Send + 'static> Paginate<I> {
    pub(super) fn new(inner: crate::Paginate<I>, handle: Arc<Handle>) -> Self {
        Self {
            inner: Some(inner),
            handle,
            failed: None,
        }
    }

    /// Takes the items from the JSON array at `pointer` (an RFC 6901 pointer such as
    /// `/data`) of each page; see [`crate::Paginate::items_at`].
    pub fn items_at(self, pointer: &str) -> Self {
        self.map(|p| p.items_at(pointer))
    }

    /// Stops after `max` pages; see [`crate::Paginate::max_pages`].
    pub fn max_pages(self, max: u64) -> Self {
        self.map(|p| p.max_pages(max))
    }

    /// Loads the next page while this one is read; see [`crate::Paginate::prefetch`].
    pub fn prefetch(self, ahead: bool) -> Self {
        self.map(|p| p.prefetch(ahead))
    }

    /// Where a new listing must start to go on from here; see
    /// [`crate::Paginate::checkpoint`]. `None` only if the driver thread stopped under the
    /// listing.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.inner.as_ref().map(crate::Paginate::checkpoint)
    }

    /// How many pages have been loaded.
    pub fn pages_done(&self) -> u64 {
        self.inner.as_ref().map_or(0, crate::Paginate::pages_done)
    }

    fn map(mut self, f: impl FnOnce(crate::Paginate<I>) -> crate::Paginate<I>) -> Self {
        self.inner = self.inner.take().map(f);
        self
    }
}

impl<I: DeserializeOwned + Send + 'static> Iterator for Paginate<I> {
    type Item = Result<I, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(err) = self.failed.take() {
            return Some(Err(err));
        }
        self.inner.as_ref()?;
        let next = self.handle.lend(&mut self.inner, |mut lent| async move {
            futures_util::StreamExt::next(lent.get()).await
        });
        match next {
            Ok(item) => item,
            Err(err) => {
                self.inner = None;
                Some(Err(err))
            }
        }
    }
}

impl<I> fmt::Debug for Paginate<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Paginate")
            .field("inner", &self.inner)
            .finish()
    }
}

/// A download that resumes after a mid-body failure (`Range` + `If-Range`): the async
/// [`crate::Download`], run on the client's driver thread by a terminal method.
///
/// ```
/// # fn demo<T: keel_core::blocking::Runtime>(client: keel_core::blocking::Client<T>) -> Result<(), keel_core::Error> {
/// let report = client
///     .get("/releases/v1.2.tar.gz")
///     .download()
///     .on_progress(|p| eprintln!("{} of {:?} bytes", p.done, p.total))
///     .to_file("v1.2.tar.gz")?;
/// eprintln!("{} bytes, {} resumes", report.bytes, report.resumes);
/// # Ok(()) }
/// ```
#[must_use = "a download does nothing until a terminal method is called"]
pub struct Download {
    inner: crate::Download,
    handle: Arc<Handle>,
}

impl Download {
    pub(super) fn new(inner: crate::Download, handle: Arc<Handle>) -> Self {
        Self { inner, handle }
    }

    /// Calls `progress` after every chunk written; see [`crate::Download::on_progress`]. It
    /// runs on the client's driver thread.
    pub fn on_progress(self, progress: impl FnMut(Progress) + Send + 'static) -> Self {
        Self {
            inner: self.inner.on_progress(progress),
            handle: self.handle,
        }
    }

    /// Checks the bytes kept with `checksum`; see [`crate::Download::checksum`].
    pub fn checksum(self, checksum: impl Checksum + 'static) -> Self {
        Self {
            inner: self.inner.checksum(checksum),
            handle: self.handle,
        }
    }

    /// How many failures in a row that brought no new byte are resumed; see
    /// [`crate::Download::max_resumes`].
    pub fn max_resumes(self, n: u32) -> Self {
        Self {
            inner: self.inner.max_resumes(n),
            handle: self.handle,
        }
    }

    /// Refuses a body larger than `bytes`; see [`crate::Download::max_size`].
    pub fn max_size(self, bytes: u64) -> Self {
        Self {
            inner: self.inner.max_size(bytes),
            handle: self.handle,
        }
    }

    /// Writes the body to the file at `path`, resuming what an earlier download left; see
    /// [`crate::Download::to_file`].
    pub fn to_file(self, path: impl AsRef<Path>) -> Result<DownloadReport, Error> {
        let path = path.as_ref().to_owned();
        self.handle.check_context();
        self.handle.call(self.inner.to_file(path))?
    }

    /// Reads the body into memory; see [`crate::Download::to_vec`].
    pub fn to_vec(self) -> Result<Vec<u8>, Error> {
        self.handle.check_context();
        self.handle.call(self.inner.to_vec())?
    }

    /// Writes the body to `writer` and flushes it; see [`crate::Download::to_writer`] (a
    /// writer can't be rewound, so a restart from zero fails). The writer is written on
    /// [`blocking`](::blocking)'s thread pool.
    pub fn to_writer<W: Write + Send + 'static>(self, writer: W) -> Result<DownloadReport, Error> {
        self.handle.check_context();
        let writer = ::blocking::Unblock::new(writer);
        self.handle.call(self.inner.to_writer(writer))?
    }
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("blocking::Download")
            .field("inner", &self.inner)
            .finish()
    }
}
