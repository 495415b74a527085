//! The built-in policies (each a pure machine behind the [`Policy`] trait) and the stack that
//! orders them for one call.

use std::time::Instant;

use super::pipeline::{Action, Policy, PolicyContext};
use super::state::OriginState;
use super::{RedirectEvent, RetryEvent};
use crate::error::{Error, ErrorKind};
use crate::machine::outcome::Outcome;
use crate::machine::redirect::{
    rewrite_headers, BodyState, RedirectAction, RedirectPolicy, RedirectRequest, Redirects,
};
use crate::machine::retry::{RequestFacts, Retry, RetryAction, RetryPolicy};

/// The policies of one call, outermost first: the user's, then redirect, then retry.
///
/// The driver loop walks [`Stack::layers`]; adding a policy is adding it here, never an edit
/// to the loop.
pub(crate) struct Stack {
    user: Vec<Box<dyn Policy>>,
    redirect: Option<RedirectLayer>,
    retry: Option<RetryLayer>,
    /// Some layer answers before attempts.
    admits: bool,
    /// Some layer needs to see plain successes.
    observes_success: bool,
}

impl Stack {
    /// The stack of a call starting at `start`, whose first attempt goes to `origin`.
    pub(crate) fn new(
        user: Vec<Box<dyn Policy>>,
        redirect: &RedirectPolicy,
        retry: &RetryPolicy,
        start: Instant,
        deadline: Instant,
        seed: u64,
        origin: &OriginState,
    ) -> Self {
        let retry = (retry.max_attempts() != Some(1)).then(|| {
            // One deposit per call, into the budget of the origin the call starts at.
            if let Some(budget) = &mut origin.lock().budget {
                budget.deposit(start);
            }
            RetryLayer {
                machine: Retry::new(retry, start, seed).with_deadline(deadline),
            }
        });
        // The built-in layers' answers are known here (the redirect layer neither admits nor
        // looks at successes; the retry layer looks at them only if its policy may retry
        // one): only the user's layers are asked.
        let admits = user.iter().any(|p| p.admits());
        let observes_success = user.iter().any(|p| p.observes_success())
            || retry
                .as_ref()
                .is_some_and(|r| r.machine.policy().may_retry_success());
        Self {
            user,
            redirect: redirect
                .follows()
                .then_some(RedirectLayer { machine: None }),
            retry,
            admits,
            observes_success,
        }
    }

    /// The stack of a call not started yet: no policy, nothing allocated.
    pub(crate) fn empty() -> Self {
        Self {
            user: Vec::new(),
            redirect: None,
            retry: None,
            admits: false,
            observes_success: false,
        }
    }

    /// Whether some layer answers before attempts; when none does, the loop sends at once.
    pub(crate) fn admits(&self) -> bool {
        self.admits
    }

    /// Whether some layer needs to see a `2xx`; when none does, the loop delivers it at once.
    pub(crate) fn observes_success(&self) -> bool {
        self.observes_success
    }

    /// True when no policy is configured: nothing can re-issue the request.
    pub(crate) fn is_empty(&self) -> bool {
        self.user.is_empty() && self.redirect.is_none() && self.retry.is_none()
    }

    /// The number of layers.
    pub(crate) fn len(&self) -> usize {
        self.user.len() + usize::from(self.redirect.is_some()) + usize::from(self.retry.is_some())
    }

    /// The layer at `index`, outermost first.
    pub(crate) fn layer(&mut self, index: usize) -> &mut dyn Policy {
        let users = self.user.len();
        if index < users {
            return &mut *self.user[index];
        }
        match (index - users, &mut self.redirect, &mut self.retry) {
            (0, Some(redirect), _) => redirect,
            (0, None, Some(retry)) | (1, Some(_), Some(retry)) => retry,
            _ => panic!("no layer {index} in the stack"),
        }
    }

    /// The attempts the retry policy counted so far (1 without retries).
    pub(crate) fn attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.machine.attempt())
    }
}

/// Retries: [`crate::machine::retry`] behind the pipeline.
struct RetryLayer {
    machine: Retry,
}

impl Policy for RetryLayer {
    fn admits(&self) -> bool {
        false
    }

    fn observes_success(&self) -> bool {
        self.machine.policy().may_retry_success()
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        if cx.is_claimed() {
            return Action::Proceed;
        }
        // Most outcomes are not worth retrying: settle those without reading the clocks.
        if self.machine.policy().retry_reason(&outcome).is_none() {
            cx.record.set_gave_up(None);
            return Action::Proceed;
        }
        let request = &*cx.request;
        let facts = RequestFacts::new(request.method())
            .with_headers(request.headers())
            .with_replayable_body(cx.body_replayable());
        let facts = match request.idempotent {
            Some(idempotent) => facts.with_idempotent(idempotent),
            None => facts,
        };
        let now = cx.now.unwrap_or_else(|| cx.timer.now());
        let action = {
            let mut state = cx.origin.lock();
            self.machine.on_outcome(
                now,
                cx.timer.now_system(),
                &facts,
                outcome,
                state.budget.as_mut(),
            )
        };
        cx.record.set_attempts(self.machine.attempt());
        match action {
            RetryAction::RetryAt {
                at,
                delay,
                attempt,
                reason,
                pacing,
            } => {
                let (method, url) = (cx.request.method(), cx.request.url());
                tracing::debug!(target: "keel::retry", %method, %url, attempt, %reason,
                    ?delay, ?pacing, "retrying");
                if let Some(hook) = &cx.config.on_retry {
                    hook(&RetryEvent {
                        attempt,
                        reason,
                        delay,
                        pacing,
                        method: method.clone(),
                        url: url.clone(),
                    });
                }
                cx.record.set_gave_up(None);
                Action::Reissue { at: Some(at) }
            }
            RetryAction::GiveUp(reason) => {
                tracing::debug!(target: "keel::retry", method = %cx.request.method(),
                    url = %cx.request.url(), %reason, "not retrying");
                cx.record.set_gave_up(Some(reason));
                Action::Proceed
            }
            _ => Action::Proceed,
        }
    }
}

/// Redirects: [`crate::machine::redirect`] behind the pipeline.
///
/// The machine is built at the call's first `3xx`: most calls never get one.
struct RedirectLayer {
    machine: Option<Box<Redirects>>,
}

impl Policy for RedirectLayer {
    fn admits(&self) -> bool {
        false
    }

    fn observes_success(&self) -> bool {
        false
    }

    fn on_outcome(&mut self, cx: &mut PolicyContext<'_>, outcome: Outcome<'_>) -> Action {
        let Outcome::Response { status, headers } = outcome else {
            return Action::Proceed;
        };
        if cx.is_claimed() || !status.is_redirection() {
            return Action::Proceed;
        }
        let body = if cx.body_sent_once {
            // The stream went with the attempt: there is a body, and none left to send.
            BodyState::OneShot
        } else if !cx.request.has_body() {
            BodyState::Empty
        } else if cx.body_replayable() {
            BodyState::Replayable
        } else {
            BodyState::OneShot
        };
        let action = {
            let request = &*cx.request;
            let facts = RedirectRequest {
                method: request.method(),
                url: request.url(),
                body,
            };
            let policy = request.redirect.as_ref().unwrap_or(&cx.config.redirect);
            self.machine
                .get_or_insert_with(|| Box::new(Redirects::new(policy)))
                .on_response(&facts, status, headers)
        };
        match action {
            RedirectAction::Follow(follow) => {
                let hop = self
                    .machine
                    .as_ref()
                    .and_then(|m| m.hops().last())
                    .cloned()
                    .expect("a followed redirect is recorded");
                tracing::debug!(target: "keel::redirect", %hop, cross_origin = follow.cross_origin,
                    "following redirect");
                if let Some(hook) = &cx.config.on_redirect {
                    hook(&RedirectEvent { hop: hop.clone() });
                }
                cx.record.push_hop(hop);
                let sensitive = &cx.config.sensitive;
                let request = &mut *cx.request;
                rewrite_headers(&mut request.headers, &follow, sensitive);
                if follow.cross_origin {
                    // A Host the caller set names the first origin, not the next one.
                    request.headers.remove(http::header::HOST);
                }
                if !follow.keep_body {
                    request.clear_body();
                }
                request.method = follow.method;
                request.url = follow.url;
                Action::Reissue { at: None }
            }
            RedirectAction::Refuse(refusal) => {
                tracing::debug!(target: "keel::redirect", url = %cx.request.url(), %refusal,
                    "redirect refused");
                Action::Fail(
                    Error::new(ErrorKind::Redirect(refusal)).with_url(cx.request.url().clone()),
                )
            }
            _ => Action::Proceed,
        }
    }
}
