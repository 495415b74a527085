//! [`Rule`]s: what a [`MockTransport`](super::MockTransport) answers to which requests, how
//! often, and how many requests each expects.

use std::fmt;
use std::ops::{Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Answer, Matcher, RecordedRequest};

/// A rule: requests it [matches](Matcher), the [`Answer`] it gives them, and optionally how
/// many it answers ([`up_to_n_times`](Rule::up_to_n_times)) and expects ([`expect`](Rule::expect)).
///
/// Rules are tried by [`priority`](Rule::priority) (1 first; 5 by default), and among equal
/// priorities in the order they were mounted; the first rule that matches and has answers left
/// answers. "503 twice, then 200" is two rules:
///
/// ```
/// use keel_core::mock::{Answer, Matcher, MockTransport, Rule};
/// use keel_core::{Client, RetryPolicy};
///
/// let mock = MockTransport::new();
/// let flaky = mock.mount(
///     Rule::when(Matcher::path("/v1/items"))
///         .respond(Answer::status(503))
///         .up_to_n_times(2)
///         .expect(2),
/// );
/// mock.mount(Rule::when(Matcher::path("/v1/items")).respond(Answer::status(200)));
///
/// let client = Client::<MockTransport>::builder()
///     .base_url("https://api.example.com/v1/")
///     .retry_policy(RetryPolicy::disabled())
///     .build_with(mock.clone())?;
/// let statuses: Vec<u16> = (0..3)
///     .map(|_| mock.run(client.get("items").send()).map(|r| r.status().as_u16()))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(statuses, [503, 503, 200]);
/// assert_eq!(flaky.hits(), 2);
/// # Ok::<(), keel_core::Error>(())
/// ```
#[must_use = "a rule does nothing until it is mounted"]
#[derive(Clone)]
pub struct Rule {
    pub(crate) matcher: Matcher,
    pub(crate) respond: Respond,
    pub(crate) limit: Option<usize>,
    pub(crate) expect: Option<Times>,
    pub(crate) priority: u8,
    pub(crate) name: Option<String>,
}

/// How a rule makes its answer.
#[derive(Clone)]
pub(crate) enum Respond {
    Fixed(Answer),
    With(Arc<dyn Fn(&RecordedRequest) -> Answer + Send + Sync>),
}

impl Rule {
    /// A rule for the requests `matcher` matches, answering `200` with an empty body until told
    /// otherwise.
    pub fn when(matcher: Matcher) -> Self {
        Self {
            matcher,
            respond: Respond::Fixed(Answer::status(200)),
            limit: None,
            expect: None,
            priority: 5,
            name: None,
        }
    }

    /// Answers with `answer` (a copy of it for every request).
    pub fn respond(mut self, answer: Answer) -> Self {
        self.respond = Respond::Fixed(answer);
        self
    }

    /// Answers with what `make` returns for each request (to echo part of it, say).
    pub fn respond_with(
        mut self,
        make: impl Fn(&RecordedRequest) -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.respond = Respond::With(Arc::new(make));
        self
    }

    /// Answers only the first `n` requests it matches; later ones go on to the next rules.
    pub fn up_to_n_times(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Expects this many requests (`2`, `1..=3`, `1..`): checked by
    /// [`MockTransport::verify`](super::MockTransport::verify), and when the mock's last clone
    /// is dropped.
    pub fn expect(mut self, times: impl Into<Times>) -> Self {
        self.expect = Some(times.into());
        self
    }

    /// The rule's priority: 1 is tried first, 255 last; 5 by default.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// A name for failure messages (otherwise the rule is described by its matcher).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Rule");
        d.field("matcher", &self.matcher);
        match &self.respond {
            Respond::Fixed(answer) => d.field("answer", answer),
            Respond::With(_) => d.field("answer", &"respond_with(..)"),
        };
        d.field("limit", &self.limit)
            .field("expect", &self.expect)
            .field("priority", &self.priority)
            .field("name", &self.name)
            .finish()
    }
}

/// How many requests a rule expects: a number or a range of numbers (`2`, `1..=3`, `1..`,
/// `..4`).
///
/// ```
/// use keel_core::mock::Times;
///
/// assert!(Times::from(2).contains(2));
/// assert!(!Times::from(1..3).contains(3));
/// assert_eq!(Times::from(1..).to_string(), "at least 1");
/// assert_eq!(Times::from(2..=4).to_string(), "between 2 and 4");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    min: usize,
    /// Inclusive.
    max: Option<usize>,
}

impl Times {
    /// Whether `n` requests meet the expectation.
    pub fn contains(&self, n: usize) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }
}

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (min, Some(max)) if min == max => write!(f, "exactly {min}"),
            (0, Some(max)) => write!(f, "at most {max}"),
            (min, Some(max)) if min > max => write!(f, "an impossible {min} to {max}"),
            (min, Some(max)) => write!(f, "between {min} and {max}"),
            (min, None) => write!(f, "at least {min}"),
        }
    }
}

impl From<usize> for Times {
    fn from(n: usize) -> Self {
        Self {
            min: n,
            max: Some(n),
        }
    }
}

impl From<Range<usize>> for Times {
    /// `a..b`: `a` to `b - 1`; an empty range can't be met.
    fn from(r: Range<usize>) -> Self {
        match r.end.checked_sub(1) {
            Some(max) => Self {
                min: r.start,
                max: Some(max),
            },
            None => Self {
                min: 1,
                max: Some(0),
            },
        }
    }
}

impl From<RangeInclusive<usize>> for Times {
    fn from(r: RangeInclusive<usize>) -> Self {
        Self {
            min: *r.start(),
            max: Some(*r.end()),
        }
    }
}

impl From<RangeFrom<usize>> for Times {
    fn from(r: RangeFrom<usize>) -> Self {
        Self {
            min: r.start,
            max: None,
        }
    }
}

impl From<RangeTo<usize>> for Times {
    fn from(r: RangeTo<usize>) -> Self {
        Self::from(0..r.end)
    }
}

impl From<RangeToInclusive<usize>> for Times {
    fn from(r: RangeToInclusive<usize>) -> Self {
        Self {
            min: 0,
            max: Some(r.end),
        }
    }
}

impl From<RangeFull> for Times {
    fn from(_: RangeFull) -> Self {
        Self { min: 0, max: None }
    }
}

/// A mounted rule, shared by the mock and the handle [`MockTransport::mount`] returns.
///
/// [`MockTransport::mount`]: super::MockTransport::mount
pub(crate) struct Mounted {
    pub(crate) rule: Rule,
    /// The order it was mounted in, among all the mock's rules.
    pub(crate) seq: usize,
    pub(crate) received: Mutex<Vec<RecordedRequest>>,
}

impl Mounted {
    pub(crate) fn received(&self) -> MutexGuard<'_, Vec<RecordedRequest>> {
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `rule #2 "name" (matcher)`.
    pub(crate) fn label(&self) -> String {
        match &self.rule.name {
            Some(name) => format!("rule #{} {name:?} ({})", self.seq + 1, self.rule.matcher),
            None => format!("rule #{} ({})", self.seq + 1, self.rule.matcher),
        }
    }

    /// Why its expectation is unmet, if it is.
    pub(crate) fn unmet(&self) -> Option<String> {
        let expect = self.rule.expect?;
        let received = self.received();
        (!expect.contains(received.len())).then(|| {
            let mut why = format!(
                "{}: expected {expect} requests, received {}",
                self.label(),
                received.len()
            );
            for r in received.iter() {
                why.push_str(&format!("\n    - {r}"));
            }
            why
        })
    }
}

/// A rule mounted on a [`MockTransport`](super::MockTransport): what it has received.
///
/// Holding it does not keep the mock alive (the mock's expectations are still checked when its
/// last clone is dropped).
#[derive(Clone)]
pub struct MountedRule {
    pub(crate) inner: Arc<Mounted>,
}

impl MountedRule {
    /// The requests this rule answered, in order.
    pub fn received(&self) -> Vec<RecordedRequest> {
        self.inner.received().clone()
    }

    /// How many requests this rule answered.
    pub fn hits(&self) -> usize {
        self.inner.received().len()
    }

    /// Whether the rule's expectation (if it has one) is met now.
    pub fn is_satisfied(&self) -> bool {
        self.inner.unmet().is_none()
    }
}

impl fmt::Debug for MountedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountedRule")
            .field("rule", &self.inner.label())
            .field("hits", &self.hits())
            .finish()
    }
}
