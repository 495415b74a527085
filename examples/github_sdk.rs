//! A typed GitHub-style SDK built on keel, with its own tests on `keel::mock::MockTransport`.
//!
//! ```sh
//! cargo run -p keel --features mock --example github_sdk    # the demo, against a mock
//! cargo test -p keel --features mock --example github_sdk   # the SDK's tests, in virtual time
//! ```
//!
//! The [`github`] module is what an SDK crate would publish: [`github::GitHub`] over any
//! [`keel::core::Transport`], typed models, a lazy paginated listing, and an error enum of its
//! own ([`github::GitHubError`]) made from keel's error kinds and GitHub's JSON error bodies.
//! Everything that makes it production-grade (retries, GitHub's rate-limit headers, a circuit
//! breaker, time limits) is keel configuration in [`github::GitHub::builder`]; the tests at
//! the bottom prove each of those behaviours without a network, in virtual time.
//!
//! In production the SDK runs on a real backend:
//!
//! ```ignore
//! let http = github::GitHub::<keel::DefaultTransport>::builder(&token).build()?;
//! let gh = github::GitHub::new(http);
//! ```

use futures_util::StreamExt as _;
use keel::mock::{Answer, Matcher, MockTransport, Rule};

use github::{GitHub, GitHubError};

pub mod github {
    //! The SDK: [`GitHub`], its models, and [`GitHubError`].

    use std::fmt;
    use std::time::Duration;

    use futures_util::stream::{self, BoxStream, StreamExt as _};
    use keel::core::{Backend, Client, ClientBuilder, Transport};
    use keel::http::StatusCode;
    use keel::machine::paginate::Strategy;
    use keel::{BreakerPolicy, ErrorKind, Jitter, RateLimit, RetryPolicy};
    use serde::{Deserialize, Serialize};

    /// Where the REST API lives.
    pub const BASE_URL: &str = "https://api.github.com/";
    /// The REST API version this SDK is written against (`X-GitHub-Api-Version`).
    pub const API_VERSION: &str = "2022-11-28";
    /// GitHub's media type for JSON (`Accept`).
    pub const MEDIA_TYPE: &str = "application/vnd.github+json";
    /// The `User-Agent` GitHub requires of every client.
    pub const USER_AGENT: &str = concat!("keel-github-example/", env!("CARGO_PKG_VERSION"));
    /// The first backoff of the retry policy (doubled after each retry).
    pub const RETRY_BASE_DELAY: Duration = Duration::from_secs(1);
    /// Items per page asked of listings (GitHub's maximum).
    pub const PER_PAGE: u32 = 100;

    /// A repository (the fields this SDK uses; GitHub sends many more).
    #[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
    pub struct Repo {
        /// GitHub's numeric id.
        pub id: u64,
        /// `owner/name`.
        pub full_name: String,
        /// The description, if it has one.
        pub description: Option<String>,
        /// The number of stars.
        pub stargazers_count: u64,
        /// Open issues and pull requests.
        pub open_issues_count: u64,
        /// The default branch.
        pub default_branch: String,
    }

    /// A user, as issues name them.
    #[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
    pub struct User {
        /// The login.
        pub login: String,
    }

    /// An issue (or a pull request: GitHub lists both as issues).
    #[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
    pub struct Issue {
        /// The number in its repository (`#42`).
        pub number: u64,
        /// The title.
        pub title: String,
        /// `open` or `closed`.
        pub state: String,
        /// Who opened it.
        pub user: Option<User>,
        /// The text, if any.
        #[serde(default)]
        pub body: Option<String>,
        /// Present when the issue is a pull request.
        #[serde(default)]
        pub pull_request: Option<serde_json::Value>,
    }

    /// What [`GitHub::create_issue`] sends.
    #[derive(Clone, Debug, Default, Serialize)]
    pub struct NewIssue {
        /// The title (required).
        pub title: String,
        /// The text.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub body: Option<String>,
        /// Labels to apply, by name.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        pub labels: Vec<String>,
    }

    /// GitHub's error body: `{"message": "...", "documentation_url": "..."}`.
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }

    /// Why a call of the SDK failed.
    ///
    /// Every variant keeps keel's [`keel::Error`] as its [`source`](std::error::Error::source)
    /// (the URL, the attempts made, the response headers…) for logs.
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum GitHubError {
        /// `404 Not Found` (GitHub also answers 404 for a private repository the token can't
        /// see).
        NotFound {
            /// GitHub's message.
            message: String,
            /// keel's error.
            source: keel::Error,
        },
        /// The rate limit is spent: GitHub said so (`403`/`429` with `X-RateLimit-Remaining:
        /// 0` or `Retry-After`), or the client held the call because the quota resets after
        /// the call's deadline.
        RateLimited {
            /// How long until the quota resets, when known.
            retry_in: Option<Duration>,
            /// keel's error.
            source: keel::Error,
        },
        /// GitHub has been failing, and the circuit breaker refused the call without sending
        /// it.
        CircuitOpen {
            /// When the breaker lets a probe through, when known.
            retry_in: Option<Duration>,
            /// keel's error.
            source: keel::Error,
        },
        /// Any other error status, with GitHub's message.
        Api {
            /// The status.
            status: StatusCode,
            /// GitHub's message (or the start of the body, or the status's reason).
            message: String,
            /// keel's error.
            source: keel::Error,
        },
        /// Everything else keel reports: a connection or TLS failure, a timeout, a body that
        /// isn't the expected JSON, an invalid argument.
        Transport(keel::Error),
    }

    impl GitHubError {
        /// Maps keel's error.
        fn from_keel(err: keel::Error) -> Self {
            match err.kind() {
                ErrorKind::CircuitOpen => Self::CircuitOpen {
                    retry_in: err.retry_in(),
                    source: err,
                },
                ErrorKind::RateLimited => Self::RateLimited {
                    retry_in: err.retry_in(),
                    source: err,
                },
                ErrorKind::Status(status) => {
                    if let Some(wait) = rate_limit_wait(&err, status) {
                        return Self::RateLimited {
                            retry_in: Some(wait),
                            source: err,
                        };
                    }
                    let message = message_of(&err, status);
                    if status == StatusCode::NOT_FOUND {
                        Self::NotFound {
                            message,
                            source: err,
                        }
                    } else {
                        Self::Api {
                            status,
                            message,
                            source: err,
                        }
                    }
                }
                _ => Self::Transport(err),
            }
        }

        /// An argument that can't be part of a URL, as keel's own
        /// [`ErrorKind::InvalidRequest`].
        fn invalid(why: String) -> Self {
            Self::Transport(keel::Error::new(ErrorKind::InvalidRequest).with_source(why))
        }

        /// keel's error underneath.
        pub fn keel_error(&self) -> &keel::Error {
            match self {
                Self::NotFound { source, .. }
                | Self::RateLimited { source, .. }
                | Self::CircuitOpen { source, .. }
                | Self::Api { source, .. }
                | Self::Transport(source) => source,
            }
        }
    }

    /// How long GitHub says to wait, when a `403`/`429` is a rate limit rather than a refusal:
    /// keel's status error reads it from `Retry-After` (the secondary limits) or from
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` (the primary limit), with the same
    /// parser as `server_quotas`.
    fn rate_limit_wait(err: &keel::Error, status: StatusCode) -> Option<Duration> {
        if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        err.retry_in()
    }

    /// GitHub's `message`, else the start of the body as text, else the status's reason.
    fn message_of(err: &keel::Error, status: StatusCode) -> String {
        let body = err.body_snippet().map(|b| &b[..]).unwrap_or_default();
        if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
            return parsed.message;
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.chars().take(200).collect()
        }
    }

    impl fmt::Display for GitHubError {
        /// This layer only (keel's convention): the cause is `source()`.
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::NotFound { message, .. } => write!(f, "not found on GitHub: {message}"),
                Self::RateLimited {
                    retry_in: Some(wait),
                    ..
                } => write!(f, "GitHub's rate limit is spent; it resets in {wait:?}"),
                Self::RateLimited { retry_in: None, .. } => {
                    f.write_str("GitHub's rate limit is spent")
                }
                Self::CircuitOpen { .. } => {
                    f.write_str("GitHub has been failing: the circuit breaker is open")
                }
                Self::Api {
                    status, message, ..
                } => write!(f, "GitHub answered {status}: {message}"),
                Self::Transport(_) => f.write_str("the request to GitHub failed"),
            }
        }
    }

    impl std::error::Error for GitHubError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.keel_error())
        }
    }

    /// The retry policy of [`GitHub::builder`], with the given jitter (`Jitter::Full` in
    /// production; tests pick `Jitter::None` for exact schedules): 3 attempts, backoff from
    /// [`RETRY_BASE_DELAY`], `Retry-After` honoured up to a minute, idempotent methods only
    /// (keel's default: a `POST` is retried only when it provably never left).
    pub fn retry_policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::builder()
            .max_attempts(3)
            .base_delay(RETRY_BASE_DELAY)
            .max_delay(Duration::from_secs(30))
            .jitter(jitter)
            .max_retry_after(Duration::from_secs(60))
            .build()
            .expect("the retry policy's constants are valid")
    }

    /// A GitHub REST API client.
    #[derive(Clone, Debug)]
    pub struct GitHub<T> {
        http: Client<T>,
    }

    impl<T: Backend> GitHub<T> {
        /// A client builder set up as this SDK runs in production: GitHub's base URL, the
        /// token, headers and user agent, retries, GitHub's rate-limit headers obeyed, a
        /// client-side pace under GitHub's secondary limit, a circuit breaker and time limits.
        /// Override any of it before `build()` / `build_with(..)`.
        pub fn builder(token: &str) -> ClientBuilder<T> {
            Client::<T>::builder()
                .base_url(BASE_URL)
                .bearer_auth(token)
                .user_agent(USER_AGENT)
                .default_header("accept", MEDIA_TYPE)
                .default_header("x-github-api-version", API_VERSION)
                .retry_policy(retry_policy(Jitter::Full))
                // `X-RateLimit-Remaining: 0` / `Retry-After` hold every later call to the
                // origin until the reset, instead of burning requests on 403s.
                .server_quotas(true)
                // GitHub's secondary limit: at most 900 points (GETs) a minute.
                .rate_limit(
                    RateLimit::per_minute(900)
                        .and_then(|limit| limit.burst(50))
                        .expect("the rate limit's constants are valid"),
                )
                .max_in_flight(10)
                .circuit_breaker(
                    BreakerPolicy::builder()
                        .consecutive_failures(5)
                        .open_for(Duration::from_secs(30), Duration::from_secs(300))
                        .build()
                        .expect("the breaker policy's constants are valid"),
                )
                .connect_timeout(Duration::from_secs(10))
                .attempt_timeout(Duration::from_secs(30))
                .read_idle_timeout(Duration::from_secs(30))
                // Longer than a typical secondary-limit hold, far shorter than a primary reset
                // (up to an hour): those fail at once as `RateLimited`.
                .deadline(Duration::from_secs(120))
        }
    }

    impl<T: Transport> GitHub<T> {
        /// The SDK over `http` (from [`GitHub::builder`], or any keel client).
        pub fn new(http: Client<T>) -> Self {
            Self { http }
        }

        /// The keel client underneath (for breaker state, or a call the SDK doesn't wrap).
        pub fn client(&self) -> &Client<T> {
            &self.http
        }

        /// `GET /repos/{owner}/{name}`.
        pub async fn repo(&self, owner: &str, name: &str) -> Result<Repo, GitHubError> {
            let path = format!("repos/{}/{}", segment(owner)?, segment(name)?);
            let result = async {
                self.http
                    .get(&path)
                    .send()
                    .await?
                    .error_for_status()
                    .await?
                    .json()
                    .await
            }
            .await;
            result.map_err(GitHubError::from_keel)
        }

        /// `GET /repos/{owner}/{name}/issues`, every page: a lazy stream that asks for the
        /// next page (the `Link: <…>; rel="next"` of each) only once the items of the page
        /// before are taken, each page a call with retries, limits and the breaker. The
        /// stream ends after the last page, or after its first error.
        pub fn issues(
            &self,
            owner: &str,
            name: &str,
        ) -> BoxStream<'static, Result<Issue, GitHubError>> {
            let path = match (segment(owner), segment(name)) {
                (Ok(owner), Ok(name)) => format!("repos/{owner}/{name}/issues"),
                (Err(err), _) | (_, Err(err)) => return stream::iter([Err(err)]).boxed(),
            };
            self.http
                .get(&path)
                .query(&[("per_page", PER_PAGE)])
                .paginate::<Issue>(Strategy::link_header())
                .map(|item| item.map_err(GitHubError::from_keel))
                .boxed()
        }

        /// `POST /repos/{owner}/{name}/issues`. Not retried once it may have reached GitHub
        /// (a retried `POST` could open the issue twice); retried only when it provably
        /// never left, as keel does for any method.
        pub async fn create_issue(
            &self,
            owner: &str,
            name: &str,
            issue: &NewIssue,
        ) -> Result<Issue, GitHubError> {
            let path = format!("repos/{}/{}/issues", segment(owner)?, segment(name)?);
            let result = async {
                self.http
                    .post(&path)
                    .json(issue)
                    .send()
                    .await?
                    .error_for_status()
                    .await?
                    .json()
                    .await
            }
            .await;
            result.map_err(GitHubError::from_keel)
        }
    }

    /// `s` as one path segment: percent-encoded but for RFC 3986's unreserved characters, and
    /// never empty, `.` or `..` (which a URL resolver would take as a step up the path).
    fn segment(s: &str) -> Result<String, GitHubError> {
        if s.is_empty() || s == "." || s == ".." {
            return Err(GitHubError::invalid(format!(
                "{s:?} is not a valid owner or repository name"
            )));
        }
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        Ok(out)
    }
}

/// A repository and its open issues, as the mock plays GitHub.
fn mount_demo(mock: &MockTransport) {
    mock.mount(
        Rule::when(Matcher::method("GET").and(Matcher::path("/repos/octocat/hello-world")))
            .respond(Answer::status(200).json(&serde_json::json!({
                "id": 1296269,
                "full_name": "octocat/hello-world",
                "description": "My first repository on GitHub!",
                "stargazers_count": 80,
                "open_issues_count": 4,
                "default_branch": "main",
            }))),
    );
    mock.mount(
        Rule::when(Matcher::path("/repos/octocat/no-such-repo")).respond(Answer::status(404).json(
            &serde_json::json!({
                "message": "Not Found",
                "documentation_url": "https://docs.github.com/rest/repos/repos#get-a-repository",
            }),
        )),
    );
    let issue = |number: u64, title: &str| {
        serde_json::json!({
            "number": number, "title": title, "state": "open",
            "user": { "login": "octocat" }, "body": null,
        })
    };
    let next = "<https://api.github.com/repositories/1296269/issues?per_page=100&page=2>; \
                rel=\"next\", \
                <https://api.github.com/repositories/1296269/issues?per_page=100&page=2>; \
                rel=\"last\"";
    mock.mount(
        Rule::when(Matcher::path("/repos/octocat/hello-world/issues")).respond(
            Answer::status(200)
                .header("link", next)
                .json(&[issue(4, "Found a bug"), issue(3, "Docs typo")]),
        ),
    );
    mock.mount(
        Rule::when(Matcher::path("/repositories/1296269/issues").and(Matcher::query("page", "2")))
            .respond(
                Answer::status(200).json(&[issue(2, "Add a licence"), issue(1, "Hello, world")]),
            ),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The SDK exactly as in production, over a mock instead of a network backend.
    let mock = MockTransport::new();
    mount_demo(&mock);
    let gh = GitHub::new(GitHub::<MockTransport>::builder("ghp_demo").build_with(mock.clone())?);

    mock.run(async {
        let repo = gh.repo("octocat", "hello-world").await?;
        println!(
            "{} ({} stars, {} open issues): {}",
            repo.full_name,
            repo.stargazers_count,
            repo.open_issues_count,
            repo.description.as_deref().unwrap_or("")
        );
        let mut issues = gh.issues("octocat", "hello-world").take(3);
        while let Some(issue) = issues.next().await {
            let issue = issue?;
            println!("  #{} {}", issue.number, issue.title);
        }
        Ok::<_, GitHubError>(())
    })?;

    match mock.run(gh.repo("octocat", "no-such-repo")) {
        Err(err @ GitHubError::NotFound { .. }) => println!("as expected: {err}"),
        other => println!("unexpected: {other:?}"),
    }
    println!(
        "{} requests, {:?} of virtual time",
        mock.requests().len(),
        mock.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use futures_util::StreamExt as _;
    use keel::core::Timer as _;
    use keel::mock::{Answer, Matcher, MockTransport, Rule};
    use keel::{BreakerState, ErrorKind, Jitter};

    use super::github::{self, GitHub, GitHubError, NewIssue};

    const TOKEN: &str = "ghp_test";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The SDK as configured for production, over `mock`.
    fn sdk(mock: &MockTransport) -> GitHub<MockTransport> {
        GitHub::new(
            GitHub::<MockTransport>::builder(TOKEN)
                .build_with(mock.clone())
                .unwrap(),
        )
    }

    fn repo_json() -> serde_json::Value {
        serde_json::json!({
            "id": 1, "full_name": "o/r", "description": null, "stargazers_count": 0,
            "open_issues_count": 0, "default_branch": "main",
        })
    }

    fn issue_json(number: u64) -> serde_json::Value {
        serde_json::json!({ "number": number, "title": format!("issue {number}"), "state": "open" })
    }

    fn not_found() -> Answer {
        Answer::status(404).json(&serde_json::json!({
            "message": "Not Found",
            "documentation_url": "https://docs.github.com/rest",
        }))
    }

    #[test]
    fn the_token_and_githubs_headers_are_sent() {
        let mock = MockTransport::new();
        let rule = mock.mount(
            Rule::when(
                Matcher::method("GET")
                    .and(Matcher::path("/repos/o/r"))
                    .and(Matcher::header("authorization", "Bearer ghp_test"))
                    .and(Matcher::header("accept", "application/vnd.github+json"))
                    .and(Matcher::header("x-github-api-version", github::API_VERSION)),
            )
            .respond(Answer::status(200).json(&repo_json()))
            .expect(1),
        );
        let repo = mock.run(sdk(&mock).repo("o", "r")).unwrap();
        assert_eq!(repo.full_name, "o/r");

        let sent = &rule.received()[0];
        assert_eq!(sent.uri().to_string(), "https://api.github.com/repos/o/r");
        assert_eq!(sent.header("authorization"), Some("Bearer ghp_test"));
        assert_eq!(sent.header("user-agent"), Some(github::USER_AGENT));
        assert_eq!(sent.header("accept"), Some(github::MEDIA_TYPE));
        assert_eq!(sent.header("x-github-api-version"), Some("2022-11-28"));
        // The token is marked sensitive: it never shows in a debug print of the request.
        assert!(!format!("{sent:?}").contains("ghp_test"));
    }

    #[test]
    fn arguments_are_escaped_into_one_path_segment() {
        let mock = MockTransport::new();
        let rule = mock.mount(
            Rule::when(Matcher::path("/repos/o/a%20b%2F..%3F"))
                .respond(Answer::status(200).json(&repo_json()))
                .expect(1),
        );
        mock.run(sdk(&mock).repo("o", "a b/..?")).unwrap();
        assert_eq!(rule.hits(), 1);
        // `..` alone would climb out of /repos: refused before anything is sent.
        let err = mock.run(sdk(&mock).repo("..", "r")).unwrap_err();
        assert!(matches!(&err, GitHubError::Transport(e) if e.kind() == ErrorKind::InvalidRequest));
        assert_eq!(mock.requests().len(), 1);
    }

    #[test]
    fn issues_walk_three_link_pages_in_order_and_stop() {
        let mock = MockTransport::new();
        let link = |page: u32| {
            format!(
                "<https://api.github.com/repositories/1/issues?per_page=100&page={page}>; \
                 rel=\"next\", <https://api.github.com/repositories/1/issues?per_page=100&page=3>; \
                 rel=\"last\""
            )
        };
        let first = mock.mount(
            Rule::when(Matcher::path("/repos/o/r/issues").and(Matcher::query("per_page", "100")))
                .respond(
                    Answer::status(200)
                        .header("link", link(2))
                        .json(&[issue_json(1), issue_json(2)]),
                )
                .expect(2),
        );
        let second = mock.mount(
            Rule::when(Matcher::path("/repositories/1/issues").and(Matcher::query("page", "2")))
                .respond(
                    Answer::status(200)
                        .header("link", link(3))
                        .json(&[issue_json(3), issue_json(4)]),
                )
                .expect(1),
        );
        // The last page: a `prev` link, no `next`.
        let third = mock.mount(
            Rule::when(Matcher::path("/repositories/1/issues").and(Matcher::query("page", "3")))
                .respond(
                    Answer::status(200)
                        .header(
                            "link",
                            "<https://api.github.com/repositories/1/issues?page=2>; rel=\"prev\"",
                        )
                        .json(&[issue_json(5)]),
                )
                .expect(1),
        );
        let gh = sdk(&mock);

        // Lazy: the first two issues take one page.
        let firsts: Vec<u64> = mock.run(
            gh.issues("o", "r")
                .take(2)
                .map(|issue| issue.unwrap().number)
                .collect(),
        );
        assert_eq!(firsts, [1, 2]);
        assert_eq!(mock.requests().len(), 1);

        let numbers: Vec<u64> = mock.run(
            gh.issues("o", "r")
                .map(|issue| issue.unwrap().number)
                .collect(),
        );
        assert_eq!(numbers, [1, 2, 3, 4, 5]);
        let urls: Vec<String> = mock.requests()[1..]
            .iter()
            .map(|r| r.uri().to_string())
            .collect();
        assert_eq!(
            urls,
            [
                "https://api.github.com/repos/o/r/issues?per_page=100",
                "https://api.github.com/repositories/1/issues?per_page=100&page=2",
                "https://api.github.com/repositories/1/issues?per_page=100&page=3",
            ]
        );
        // Every page carried the credentials (same origin).
        assert!(mock
            .requests()
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer ghp_test")));
        assert_eq!((first.hits(), second.hits(), third.hits()), (2, 1, 1));
    }

    #[test]
    fn an_error_page_ends_the_listing_with_a_typed_error() {
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r/issues"))
                .respond(
                    Answer::status(200)
                        .header(
                            "link",
                            "<https://api.github.com/repos/o/r/issues?page=2>; rel=\"next\"",
                        )
                        .json(&[issue_json(1)]),
                )
                .up_to_n_times(1),
        );
        mock.mount(Rule::when(Matcher::query("page", "2")).respond(not_found()));
        let items: Vec<Result<u64, GitHubError>> = mock.run(
            sdk(&mock)
                .issues("o", "r")
                .map(|issue| issue.map(|i| i.number))
                .collect(),
        );
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].as_ref().unwrap(), &1);
        assert!(
            matches!(&items[1], Err(GitHubError::NotFound { message, .. }) if message == "Not Found")
        );
    }

    #[test]
    fn a_503_then_a_200_is_retried_after_the_backoff() {
        let mock = MockTransport::new();
        let unavailable = mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(Answer::status(503))
                .up_to_n_times(1)
                .expect(1),
        );
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(Answer::status(200).json(&repo_json()))
                .expect(1),
        );
        // The production settings, with the jitter off for an exact schedule.
        let gh = GitHub::new(
            GitHub::<MockTransport>::builder(TOKEN)
                .retry_policy(github::retry_policy(Jitter::None))
                .build_with(mock.clone())
                .unwrap(),
        );
        mock.run(gh.repo("o", "r")).unwrap();
        let at: Vec<Duration> = mock.requests().iter().map(|r| r.at()).collect();
        assert_eq!(at, [Duration::ZERO, github::RETRY_BASE_DELAY]);
        assert_eq!(unavailable.hits(), 1);

        // With the production jitter (full), the wait is somewhere in [0, base delay].
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(Answer::status(503))
                .up_to_n_times(1),
        );
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r")).respond(Answer::status(200).json(&repo_json())),
        );
        mock.run(sdk(&mock).repo("o", "r")).unwrap();
        assert_eq!(mock.requests().len(), 2);
        assert!(
            mock.elapsed() <= github::RETRY_BASE_DELAY,
            "{:?}",
            mock.elapsed()
        );
    }

    #[test]
    fn a_spent_quota_holds_the_next_call_until_the_reset() {
        let mock = MockTransport::new();
        // GitHub's primary limit: 403, nothing remaining, reset as a Unix time.
        let reset = mock.clock().now_system() + secs(60);
        let reset = reset.duration_since(UNIX_EPOCH).unwrap().as_secs();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(
                    Answer::status(403)
                        .header("x-ratelimit-limit", "5000")
                        .header("x-ratelimit-remaining", "0")
                        .header("x-ratelimit-reset", reset.to_string())
                        .json(&serde_json::json!({ "message": "API rate limit exceeded for user ID 1." })),
                )
                .up_to_n_times(1)
                .expect(1),
        );
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(Answer::status(200).json(&repo_json()))
                .expect(1),
        );
        let gh = sdk(&mock);

        // The 403 is not retried, and reads as the rate limit it is.
        let err = mock.run(gh.repo("o", "r")).unwrap_err();
        let GitHubError::RateLimited {
            retry_in: Some(wait),
            ..
        } = err
        else {
            panic!("{err:?}");
        };
        // The reset is in whole seconds; the clock isn't.
        assert!(wait > secs(59) && wait <= secs(60), "{wait:?}");

        // The next call waits for the reset (plus keel's spread of at most 1 s) before it goes.
        mock.run(gh.repo("o", "r")).unwrap();
        let second = mock.requests()[1].at();
        assert!(second > secs(59) && second <= secs(61), "{second:?}");
    }

    #[test]
    fn a_429_with_retry_after_is_waited_out_then_retried() {
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(Answer::status(429).header("retry-after", "30"))
                .up_to_n_times(1),
        );
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r")).respond(Answer::status(200).json(&repo_json())),
        );
        let gh = sdk(&mock);
        mock.run(gh.repo("o", "r")).unwrap();
        let retried = mock.requests()[1].at();
        // Retry-After, and the quota hold's spread of at most a tenth of it.
        assert!(retried >= secs(30) && retried <= secs(33), "{retried:?}");

        // The hold is over: the next call goes at once.
        let before = mock.elapsed();
        mock.run(gh.repo("o", "r")).unwrap();
        assert_eq!(mock.elapsed(), before);
    }

    #[test]
    fn a_reset_past_the_deadline_fails_at_once_without_a_request() {
        let mock = MockTransport::new();
        let reset = mock.clock().now_system() + secs(3600);
        let reset = reset.duration_since(UNIX_EPOCH).unwrap().as_secs();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r"))
                .respond(
                    Answer::status(403)
                        .header("x-ratelimit-remaining", "0")
                        .header("x-ratelimit-reset", reset.to_string()),
                )
                .expect(1),
        );
        let gh = sdk(&mock);
        let err = mock.run(gh.repo("o", "r")).unwrap_err();
        assert!(matches!(err, GitHubError::RateLimited { .. }), "{err:?}");

        // An hour's wait is past the SDK's 2-minute deadline: refused now, nothing sent.
        let err = mock.run(gh.repo("o", "r")).unwrap_err();
        let GitHubError::RateLimited {
            retry_in: Some(wait),
            ref source,
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(source.kind(), ErrorKind::RateLimited);
        assert!(wait > secs(3500), "{wait:?}");
        assert_eq!(mock.requests().len(), 1);
        assert_eq!(mock.elapsed(), Duration::ZERO);
    }

    #[test]
    fn repeated_500s_open_the_breaker_and_the_next_call_fails_fast() {
        let mock = MockTransport::new();
        let failing =
            mock.mount(Rule::when(Matcher::any()).respond(
                Answer::status(500).json(&serde_json::json!({ "message": "Server Error" })),
            ));
        let gh = sdk(&mock);

        // Three attempts per call; the breaker trips on the fifth failure in a row.
        let first = mock.run(gh.repo("o", "r")).unwrap_err();
        assert!(
            matches!(&first, GitHubError::Api { status, message, .. } if *status == 500 && message == "Server Error"),
            "{first:?}"
        );
        assert_eq!(failing.hits(), 3);
        // The second call's first two attempts get 500s and trip the breaker, so its third
        // attempt is refused: the call ends as `CircuitOpen`, after 5 requests in all.
        let second = mock.run(gh.repo("o", "r")).unwrap_err();
        assert_eq!(failing.hits(), 5, "{second:?}");
        assert!(
            matches!(&second, GitHubError::CircuitOpen { source, .. } if source.attempts() == 3),
            "{second:?}"
        );
        assert!(matches!(
            gh.client().breaker_state("https://api.github.com/"),
            Some(BreakerState::Open { .. })
        ));

        // Now: refused at once, in no time, without a request.
        let sent = mock.requests().len();
        let before = mock.elapsed();
        let err = mock.run(gh.repo("o", "r")).unwrap_err();
        let GitHubError::CircuitOpen { retry_in, .. } = err else {
            panic!("{err:?}");
        };
        assert!(
            retry_in.is_some_and(|wait| wait <= secs(30)),
            "{retry_in:?}"
        );
        assert_eq!(mock.requests().len(), sent);
        assert_eq!(mock.elapsed(), before);
    }

    #[test]
    fn a_404_is_not_found() {
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/private"))
                .respond(not_found())
                .expect(1),
        );
        let err = mock.run(sdk(&mock).repo("o", "private")).unwrap_err();
        let GitHubError::NotFound { message, source } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(message, "Not Found");
        assert_eq!(err.to_string(), "not found on GitHub: Not Found");
        // The source chain leads to keel's error, with the URL.
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("api.github.com/repos/o/private"), "{cause}");
        assert_eq!(source.attempts(), 1, "a 404 is not retried");
    }

    #[test]
    fn create_issue_posts_json_and_is_not_retried_on_a_502() {
        let mock = MockTransport::new();
        let new = NewIssue {
            title: "Crash on start".into(),
            body: Some("Steps: …".into()),
            labels: vec!["bug".into()],
        };
        let post = Matcher::method("POST").and(Matcher::path("/repos/o/r/issues"));
        // `expect(1)`: checked when the mock's last clone is dropped, at the end of the test.
        mock.mount(
            Rule::when(post.clone())
                .respond(Answer::status(502).text("<html>Bad gateway</html>"))
                .up_to_n_times(1)
                .expect(1),
        );
        let created = mock.mount(
            Rule::when(post.and(Matcher::body_json(&serde_json::json!({
                "title": "Crash on start", "body": "Steps: …", "labels": ["bug"],
            }))))
            .respond(Answer::status(201).json(&issue_json(7)))
            .expect(1),
        );
        let gh = sdk(&mock);

        let err = mock.run(gh.create_issue("o", "r", &new)).unwrap_err();
        let GitHubError::Api {
            status,
            message,
            source,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(
            (status.as_u16(), message.as_str()),
            (502, "<html>Bad gateway</html>")
        );
        assert_eq!(source.attempts(), 1);
        assert!(source.gave_up().is_some(), "keel says why it didn't retry");
        assert_eq!(mock.requests().len(), 1);
        assert_eq!(mock.elapsed(), Duration::ZERO);

        // Sent again by the caller, it is created.
        let issue = mock.run(gh.create_issue("o", "r", &new)).unwrap();
        assert_eq!(issue.number, 7);
        assert_eq!(
            created.received()[0].header("content-type"),
            Some("application/json")
        );
    }

    #[test]
    fn an_unmatched_request_is_reported() {
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::path("/repos/o/r")).respond(Answer::status(200).json(&repo_json())),
        );
        let err = mock.run(sdk(&mock).repo("o", "typo")).unwrap_err();
        // The mock's 404 says which request no rule matched; the SDK passes its text on.
        let GitHubError::NotFound { message, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("no rule matched GET https://api.github.com/repos/o/typo"),
            "{message}"
        );
        let unmatched = mock.unmatched();
        assert_eq!(unmatched.len(), 1);
        assert_eq!(unmatched[0].path(), "/repos/o/typo");
    }

    #[test]
    #[should_panic(expected = "expected exactly 1 requests, received 0")]
    fn an_expected_call_the_sdk_never_made_fails_the_test() {
        let mock = MockTransport::new();
        mock.mount(
            Rule::when(Matcher::method("POST").and(Matcher::path("/repos/o/r/issues")))
                .named("create issue")
                .expect(1),
        );
        let _gh = sdk(&mock);
        // Nothing called: dropping the mock and the SDK's clone panics with the unmet rule.
    }
}
