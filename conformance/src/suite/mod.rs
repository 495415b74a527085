//! The shared suite: every case is written once, generic over the backend, and run on a host
//! runtime against a fresh [`TestServer`].
//!
//! A case returns [`Outcome::Pass`], [`Outcome::NotSupported`] when the backend lacks a
//! capability the case needs (recorded as such in the scorecard, never silently skipped), or a
//! [`Failure`]. Every case runs under a wall-clock limit ([`CASE_LIMIT`]) on its own thread, so
//! a hung case is reported as failed instead of hanging the run.

pub mod caps;
pub mod cases;
pub mod chaos;
pub mod connection;
pub mod cookies;
pub mod decoding;
pub mod dns;
pub mod downloads;
pub mod fanout;
pub mod faults_h1;
pub mod faults_net;
pub mod hedging;
pub mod limits;
pub mod multipart;
pub mod paginate;
pub mod proxy;
pub mod redirects;
pub mod retries;
pub mod streams;
pub mod tls;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use keel_core::store::StateStore;
use keel_core::{Backend, Capabilities, Certificate, Client, ClientBuilder, Timer};

use crate::rt::HostRuntime;
use crate::server::TestServer;

/// The longest a single case may run before it counts as failed.
pub const CASE_LIMIT: Duration = Duration::from_secs(60);

/// What a case concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backend behaved as keel promises.
    Pass,
    /// The backend lacks a capability this case needs.
    NotSupported(&'static str),
}

/// Why a case failed.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: fmt::Display> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure(err.to_string())
    }
}

/// What a case returns.
pub type CaseResult = Result<Outcome, Failure>;

/// Fails the case with a formatted message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::suite::Failure(format!($($msg)+)));
        }
    };
}

/// Everything a case gets: a fresh server and a way to configure clients on the backend.
pub struct Cx<T> {
    /// The server this case talks to; no other case shares it.
    pub server: TestServer,
    /// Where the clients of [`Cx::builder`] keep their breakers', limiters' and holds' state
    /// (`None`: in the process, the default).
    pub store: Option<Arc<dyn StateStore>>,
    _backend: PhantomData<fn() -> T>,
}

impl<T: Backend> Cx<T> {
    fn new(server: TestServer) -> Self {
        Self {
            server,
            store: None,
            _backend: PhantomData,
        }
    }

    /// A builder with the server's plain URL as base URL and time limits that keep a
    /// misbehaving case well inside [`CASE_LIMIT`] (and the case's state store, if it has
    /// one).
    pub fn builder(&self) -> ClientBuilder<T> {
        let builder = Client::<T>::builder()
            .base_url(&self.server.url(""))
            .deadline(Duration::from_secs(30));
        match &self.store {
            Some(store) => builder.state_store(store.clone()),
            None => builder,
        }
    }

    /// A client from [`Cx::builder`].
    pub fn client(&self) -> Result<Client<T>, Failure> {
        Ok(self.builder().build()?)
    }

    /// The server's self-signed certificate, as a root to trust.
    pub fn server_root(&self) -> Certificate {
        Certificate::from_pem(self.server.ca_cert_pem())
    }

    /// Waits, without blocking the executor, until the server has `n` connections open; returns
    /// whether it got there within `limit`. Connections close on the client's runtime, so a
    /// blocking wait could stop the very task that closes them.
    pub async fn wait_for_open_connections(
        &self,
        timer: &dyn Timer,
        n: usize,
        limit: Duration,
    ) -> bool {
        let until = timer.now() + limit;
        loop {
            if self.server.open_connections() == n {
                return true;
            }
            let now = timer.now();
            if now >= until {
                return false;
            }
            timer.sleep_until(now + Duration::from_millis(10)).await;
        }
    }

    /// What the backend under test supports.
    pub fn capabilities(&self) -> Capabilities {
        T::capabilities()
    }
}

impl<T> fmt::Debug for Cx<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx").field("server", &self.server).finish()
    }
}

/// Whether the case runs on a runtime whose spawned tasks can run on another thread than the
/// case (tokio's multi-thread runtime): there a backend without
/// [`Capabilities::pool_return_on_body_end`] may open a second connection for sequential
/// requests, so cases that count them exactly report that capability as not supported.
pub fn tasks_run_on_other_threads() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// A case's future.
pub type CaseFuture = Pin<Box<dyn Future<Output = CaseResult>>>;

/// One case of the suite, instantiated for backend `T`.
pub struct Case<T> {
    /// The case's name, as in the scorecard and the test name.
    pub name: &'static str,
    /// Runs the case.
    pub run: fn(Cx<T>) -> CaseFuture,
}

impl<T> fmt::Debug for Case<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Calls `$mac!{ [args] case1 case2 … }` with every case of the suite. The one list of cases.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($mac:ident, $($args:tt)*) => {
        $crate::$mac! { [$($args)*]
            methods
            headers
            url_credentials_become_basic_auth
            query
            json_round_trip
            body_10_mib
            stream_large_body
            connection_reuse
            connection_facts_on_responses
            pool_stats_count_connections
            http2_over_tls
            http2_prior_knowledge
            connection_refused
            connect_timeout_tls
            attempt_timeout
            read_idle_timeout
            deadline_mid_body
            body_over_limit
            drop_response_mid_body
            drop_request_future
            untrusted_certificate
            invalid_url
            invalid_header
            garbage_response
            truncated_body
            reset_mid_body
            status_error
            decode_error_path
            empty_body_framing
            fault_idle_closed_connection
            fault_connection_close_answers
            fault_headers_trickled
            fault_header_section_over_limit
            fault_malformed_chunk_size
            fault_body_longer_than_content_length
            fault_conflicting_content_lengths
            fault_chunked_and_content_length
            fault_informational_before_final
            fault_no_content_stray_body
            fault_head_with_content_length
            fault_early_413
            fault_request_body_fails_midway
            fault_header_value_crlf
            decodes_gzip_deflate_br_and_zstd
            decompress_off_gets_the_bytes_as_sent
            decompression_bomb_stopped_at_the_limits
            truncated_gzip_is_a_decode_error
            retry_503_twice_then_200
            retry_after_429
            post_retried_only_with_idempotency_key
            deadline_stops_retries
            reset_mid_body_is_retried
            final_error_counts_attempts
            redirect_301
            redirect_302
            redirect_303
            redirect_307
            redirect_308
            redirect_307_one_shot_body_refused
            redirect_chain_10_followed_11_refused
            redirect_loop_detected
            redirect_https_to_http_refused
            redirect_cross_origin_strips_credentials
            redirect_default_authorization_stays_on_its_origin
            redirect_none_delivers_the_3xx
            cookies_return_to_their_origin_only
            cookies_expire_and_are_deleted
            secure_cookies_stay_off_plain_http
            breaker_opens_and_a_probe_closes_it
            rate_limit_paces_requests
            rate_limit_holds_a_steady_pace
            server_quota_holds_requests
            redis_store_breaker_opens_and_a_probe_closes_it
            redis_store_rate_limit_paces_requests
            redis_store_rate_limit_holds_a_steady_pace
            redis_store_server_quota_holds_requests
            max_in_flight_bounds_what_the_server_sees
            connection_cap_holds_under_10k_requests
            pool_acquire_timeout_is_its_own_error
            total_connection_cap_across_origins
            idle_connections_are_bounded
            cancellation_storm
            hedged_get_returns_the_fast_answer
            fan_out_keeps_the_asked_order
            sse_reconnects_with_the_last_event_id
            sse_post_streams_a_completion
            ndjson_streams_100k_lines
            download_resumes_a_100_mib_body_cut_three_times
            download_restarts_from_zero_when_the_etag_changes
            paginate_link_header
            paginate_body_strategies
            paginate_cycle_and_resume
            multipart_form_round_trips
            multipart_100_mib_upload_retried_after_a_reset
            resolve_override_reaches_the_server
            custom_resolver_and_cache_resolve_once
            local_address_binds_new_connections
            mtls_accepts_the_right_certificate_only
            mtls_identity_from_pkcs12
            min_tls_version_refuses_older_servers
            only_the_danger_option_skips_verification
            proxy_forwards_plain_http_with_credentials
            proxy_tunnels_https_with_connect
            proxy_socks5_tunnels
            no_proxy_bypasses_the_proxy
            proxy_refusing_connections_is_a_proxy_error
            proxy_over_tls
            fault_name_does_not_resolve
            fault_connect_never_answered
            fault_tls_name_mismatch
            fault_tls_expired_certificate
            fault_https_to_a_plain_port
            fault_http_to_a_tls_port
            fault_h2_goaway_mid_stream
            fault_h2_refused_stream
            fault_h2_no_flow_control_window
            fault_chaos_delay_within_timeouts
            fault_chaos_one_byte_segments
            fault_chaos_throttled_body
            fault_chaos_stall_mid_headers
            fault_chaos_stall_mid_body
            fault_chaos_reset_mid_body
            fault_chaos_close_mid_body
            fault_chaos_close_mid_chunked_body
            fault_chaos_delay_past_attempt_timeout
            fault_chaos_trickled_head_past_attempt_timeout
            fault_chaos_close_mid_headers
            fault_chaos_reset_mid_headers
            fault_chaos_reset_request_upload
            fault_chaos_close_request_upload
            fault_chaos_stall_request_upload
            fault_chaos_close_then_retry_on_fresh_connection
            fault_chaos_reset_then_retry_on_fresh_connection
            fault_chaos_stall_tls_handshake
            fault_chaos_reset_tls_handshake
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __registry {
    ([] $($name:ident)*) => {
        /// Every case of the suite, for backend `T`, in suite order.
        pub fn all<T: keel_core::Backend>() -> Vec<Case<T>> {
            vec![$(Case {
                name: stringify!($name),
                run: |cx| Box::pin(cases::$name::<T>(cx)),
            }),*]
        }
    };
}

__for_each_case!(__registry,);

#[doc(hidden)]
#[macro_export]
macro_rules! __case_names {
    ([] $($name:ident)*) => {
        /// The names of every case of the suite, in suite order.
        pub const CASE_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

__for_each_case!(__case_names,);

/// Generates one `#[test]` per suite case for a backend on a host runtime.
///
/// ```ignore
/// // conformance/tests/hyper_tokio.rs
/// keel_conformance::suite!(keel_hyper::HyperTransport, keel_conformance::rt::Tokio);
/// ```
#[macro_export]
macro_rules! suite {
    ($backend:ty, $rt:ty) => {
        $crate::__for_each_case!(__suite_tests, $backend, $rt);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    ([$backend:ty, $rt:ty] $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                $crate::suite::assert_case::<$backend, $rt>(stringify!($name));
            }
        )*
    };
}

/// How one case went.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// The case's name.
    pub case: &'static str,
    /// What happened.
    pub status: Status,
    /// Wall-clock time, server start included.
    pub elapsed: Duration,
}

/// The result of running a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Pass,
    /// Failed, with the reason.
    Fail(String),
    /// Not supported by this backend, with the capability.
    NotSupported(&'static str),
}

/// Runs one case of backend `T` on host runtime `R`, on its own thread, under [`CASE_LIMIT`].
pub fn run_case<T: Backend, R: HostRuntime>(case: &Case<T>) -> CaseReport {
    let started = Instant::now();
    let run = case.run;
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("case-{}", case.name))
        .spawn(move || {
            let status = match TestServer::start() {
                Err(e) => Status::Fail(format!("test server did not start: {e}")),
                Ok(server) => match R::block_on(run(Cx::new(server))) {
                    Ok(Outcome::Pass) => Status::Pass,
                    Ok(Outcome::NotSupported(what)) => Status::NotSupported(what),
                    Err(Failure(msg)) => Status::Fail(msg),
                },
            };
            let _ = tx.send(status);
        });
    let status = match spawned {
        Err(e) => Status::Fail(format!("could not spawn the case thread: {e}")),
        Ok(_) => match rx.recv_timeout(CASE_LIMIT) {
            Ok(status) => status,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Status::Fail(format!("did not finish within {CASE_LIMIT:?}"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Status::Fail("panicked".to_owned()),
        },
    };
    CaseReport {
        case: case.name,
        status,
        elapsed: started.elapsed(),
    }
}

/// Runs the named case and panics (failing the calling test) unless it passed or is not
/// supported by the backend.
pub fn assert_case<T: Backend, R: HostRuntime>(name: &str) {
    let cases = all::<T>();
    let case = cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no suite case named {name}"));
    let report = run_case::<T, R>(case);
    match report.status {
        Status::Pass => {}
        Status::NotSupported(what) => {
            println!("{name}: not supported by {} ({what})", T::NAME);
        }
        Status::Fail(msg) => panic!(
            "{name} failed on {} / {} after {:?}: {msg}",
            T::NAME,
            R::NAME,
            report.elapsed
        ),
    }
}
