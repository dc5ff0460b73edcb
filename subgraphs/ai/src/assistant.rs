//! The assistant: a question about a passage answered from its graph context, by the
//! configured LLM (Anthropic, then an OpenAI-compatible fallback) or, with none configured or
//! when every vendor failed, by the extractive provider; every answer's citations are checked
//! against the context, and answers are cached ([`crate::cache`]).
//!
//! In order, for each question: the arguments are checked (`VALIDATION_ERROR`), the context is
//! gathered from content ([`crate::content`]; an unknown passage is `PASSAGE_NOT_FOUND`,
//! content down `UPSTREAM_UNAVAILABLE`), the cache is asked by (question, arguments, template
//! version, context, provider and model), and on a miss the answer is made and kept. An answer
//! the LLM could not give (every vendor failed, or its reply was malformed) is made by the
//! extractive provider instead and is not cached, so the next question asks the vendor again;
//! a vendor answer that comes after the question's deadline (paid for) is kept for the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;

use gospelib_kit::metrics::Metrics;
use gospelib_kit::single_flight::{Role, SingleFlight};

use crate::answer::{Connection, Explanation, StudyQuestion};
use crate::budget::{Taken, VendorBudget};
use crate::cache::AnswerCache;
use crate::content::{ContentSource, ContextError, gather};
use crate::context::PassageContext;
use crate::extractive;
use crate::late_calls::LateCalls;
use crate::llm::prompts::{MAX_CONNECTIONS, MAX_FOCUS_CHARS, MAX_QUESTIONS};
use crate::llm::{
    LlmClient, LlmError, LlmReply, Prompt, parse_connections, parse_explanation, parse_questions,
    render_connections, render_explain, render_questions,
};

/// How long the vendors may take for one answer by default: under the router's subgraph
/// timeout (10 s by default), leaving time for the extractive answer.
pub const DEFAULT_VENDOR_DEADLINE: Duration = Duration::from_secs(8);

/// How long past its own deadline an asker waits for an identical question's answer made by
/// another (the maker's cache write included, at most a second).
pub const JOINED_GRACE: Duration = Duration::from_secs(1);

/// Study questions asked for when `count` is absent.
pub const DEFAULT_QUESTIONS: u32 = 5;

/// Why a question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum AssistantError {
    #[error("{0}")]
    Invalid(String),
    #[error("no passage {0:?}")]
    PassageNotFound(String),
    #[error("{message}")]
    Refused { message: String, code: String },
    #[error("the scripture graph is unavailable right now; try again shortly")]
    Unavailable,
}

impl AssistantError {
    /// The error's `extensions.code`.
    pub fn code(&self) -> &str {
        match self {
            AssistantError::Invalid(_) => "VALIDATION_ERROR",
            AssistantError::PassageNotFound(_) => "PASSAGE_NOT_FOUND",
            AssistantError::Refused { code, .. } => code,
            AssistantError::Unavailable => "UPSTREAM_UNAVAILABLE",
        }
    }
}

/// What asking the vendors gave.
enum Asked<T> {
    /// Their answer, read.
    Answered(T),
    /// A reply that came (paid for) and could not be used.
    Unusable,
    /// No reply: no vendor, cooling down, no time or budget left, the same question on its
    /// way, a failure, or past the deadline.
    NotAnswered,
    /// Not asked: the asker's own share of the day is spent (another asker may have some).
    ShareSpent,
}

impl<T> Asked<T> {
    /// The answer to give and how long to keep it: the vendors' answer, else `stand_in`'s
    /// (the extractive provider's), kept briefly in place of an unusable reply and not at all
    /// in place of none.
    fn or_stand_in(self, stand_in: impl FnOnce() -> T) -> (T, Keep) {
        match self {
            Asked::Answered(answer) => (answer, Keep::Answer),
            Asked::Unusable => (stand_in(), Keep::Briefly),
            Asked::NotAnswered => (stand_in(), Keep::No),
            Asked::ShareSpent => (stand_in(), Keep::NorShared),
        }
    }
}

/// How long an answer made is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// A vendor's answer, or the extractive provider's when no vendor is configured:
    /// [`crate::cache::TTL`].
    Answer,
    /// The extractive answer in place of a vendor's unusable reply:
    /// [`crate::cache::UNUSABLE_TTL`].
    Briefly,
    /// The extractive answer in place of a vendor that did not answer: not kept.
    No,
    /// The extractive answer in place of a vendor the asker's spent share kept them from: not
    /// kept, nor handed to those waiting for the same question (their shares may allow it).
    NorShared,
}

/// An answer made for one question and handed to everyone who asked it meanwhile.
#[derive(Clone)]
struct SharedAnswer {
    answer: serde_json::Value,
    /// Whether those who waited for it take it ([`Keep::NorShared`]: they ask again).
    for_others: bool,
}

/// How many times those waiting for a question ask again after its answer was not for them
/// (each time one asks, its own share taken, and the rest wait for it): past that, they take
/// the stand-in too.
const ASKED_AGAIN_AT_MOST: usize = 3;

/// The assistant with its sources.
pub struct Assistant {
    content: Arc<dyn ContentSource>,
    /// The configured vendors; `None`: the extractive provider answers everything.
    llm: Option<Arc<dyn LlmClient>>,
    cache: Option<AnswerCache>,
    /// How long the vendors may take for one answer, together.
    vendor_deadline: Duration,
    /// Where answers and dropped citations are counted (`gospelib_ai_answers_total`,
    /// `gospelib_ai_citations_dropped_total`).
    metrics: Option<Metrics>,
    /// Citations dropped because the context did not hold them (a model's inventions).
    invented: AtomicU64,
    /// Answers served from the cache.
    cache_hits: AtomicU64,
    /// Answers being made, by cache key: identical questions asked while one is being
    /// answered (a daily-reading push sends many readers to one passage at once) wait for it
    /// instead of each paying a vendor. The answer as JSON.
    in_flight: SingleFlight<String, SharedAnswer>,
    /// The platform's daily budget of vendor questions; `None`: not counted (tests without
    /// Redis).
    budget: Option<Arc<VendorBudget>>,
    /// Vendor calls going on past their asker's deadline, to be kept when they answer: the
    /// same question meanwhile is not asked again.
    late_calls: LateCalls,
}

impl Assistant {
    pub fn new(
        content: Arc<dyn ContentSource>,
        llm: Option<Arc<dyn LlmClient>>,
        cache: Option<AnswerCache>,
    ) -> Self {
        Self {
            content,
            llm,
            cache,
            metrics: None,
            vendor_deadline: DEFAULT_VENDOR_DEADLINE,
            invented: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            in_flight: SingleFlight::new(),
            budget: None,
            late_calls: LateCalls::default(),
        }
    }

    /// The assistant asking the vendors only within `budget`.
    pub fn with_vendor_budget(mut self, budget: VendorBudget) -> Self {
        self.budget = Some(Arc::new(budget));
        self
    }

    /// The assistant giving the vendors `deadline` for one answer (primary and fallback together).
    pub fn with_vendor_deadline(mut self, deadline: Duration) -> Self {
        self.vendor_deadline = deadline;
        self
    }

    /// The assistant counting its answers and dropped citations in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many invented citations were dropped so far.
    pub fn invented_citations(&self) -> u64 {
        self.invented.load(Ordering::Relaxed)
    }

    /// How many answers came from the cache so far.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// The question's deadline: the vendors' time counts from when it was asked, so a slow
    /// context read leaves them less, and the answer (the extractive one at worst) still comes
    /// inside the router's subgraph timeout.
    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.vendor_deadline
    }

    /// Passage `id`'s context, gathered before `deadline` (past it: unavailable).
    async fn context(
        &self,
        id: &str,
        deadline: tokio::time::Instant,
    ) -> Result<PassageContext, AssistantError> {
        let gathered = tokio::time::timeout_at(deadline, gather(self.content.as_ref(), id)).await;
        let Ok(gathered) = gathered else {
            tracing::warn!(
                "the assistant could not gather a passage's context before its deadline"
            );
            return Err(AssistantError::Unavailable);
        };
        match gathered {
            Ok(Some(context)) => Ok(context),
            Ok(None) => Err(AssistantError::PassageNotFound(id.to_owned())),
            Err(ContextError::Refused { message, code }) => {
                Err(AssistantError::Refused { message, code })
            }
            Err(ContextError::Unavailable(reason)) => {
                tracing::warn!(%reason, "the assistant could not gather a passage's context");
                Err(AssistantError::Unavailable)
            }
        }
    }

    /// The answer to `question` cached under `key`, or `make`'s: kept as long as it says
    /// ([`Keep`]: a vendor's answer, or the extractive provider's when no vendor is configured,
    /// for an hour; the extractive provider's in place of a vendor's unusable reply for ten
    /// minutes; in place of a vendor that did not answer, not at all). While one is
    /// being made, the same question under the same key waits for it (`make` runs once), but
    /// not past this asker's `deadline` and [`JOINED_GRACE`]: one who began later has a later
    /// deadline, and waiting for it could pass the router's subgraph timeout. Such a waiter
    /// gets `stand_in`'s answer (the extractive provider's), not kept.
    async fn cached<T, F>(
        &self,
        question: &str,
        key: Option<String>,
        deadline: tokio::time::Instant,
        stand_in: impl FnOnce() -> T,
        make: F,
    ) -> T
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = (T, Keep)>,
    {
        let provider = if self.llm.is_some() {
            "llm"
        } else {
            extractive::PROVIDER
        };
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(hit) = cache.get::<T>(key).await
        {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            self.count(question, provider, "cache");
            return hit;
        }
        let Some(key) = key else {
            return self.made(question, provider, None, make).await.0;
        };
        let mut make = Some(make);
        let mut asked_again = 0;
        let give_up_at = deadline + JOINED_GRACE;
        loop {
            let joined = std::sync::atomic::AtomicBool::new(false);
            // Set when this asker does the work itself (it leads, or took over from a leader
            // that was dropped): its own work is bounded by its own deadline, never cut.
            let working = std::sync::atomic::AtomicBool::new(false);
            // In a block of its own: the work borrows `make` until it is dropped.
            let (shared, role) = {
                let run = self.in_flight.run_noting_joins(
                    key.clone(),
                    || async {
                        working.store(true, Ordering::Relaxed);
                        // Made and kept by another just before this one began: asked once, not twice.
                        if let Some(cache) = &self.cache
                            && let Some(hit) = cache.get::<T>(&key).await
                        {
                            self.cache_hits.fetch_add(1, Ordering::Relaxed);
                            self.count(question, provider, "cache");
                            return SharedAnswer {
                                answer: serde_json::to_value(&hit).expect("an answer is JSON"),
                                for_others: true,
                            };
                        }
                        let make = make
                            .take()
                            .expect("a question is made at most once per asker");
                        let (answer, keep) = self.made(question, provider, Some(&key), make).await;
                        SharedAnswer {
                            answer: serde_json::to_value(&answer).expect("an answer is JSON"),
                            for_others: keep != Keep::NorShared,
                        }
                    },
                    || joined.store(true, Ordering::Relaxed),
                );
                tokio::pin!(run);
                let outcome = tokio::select! {
                    outcome = &mut run => Some(outcome),
                    () = tokio::time::sleep_until(give_up_at) => None,
                };
                match outcome {
                    Some(outcome) => outcome,
                    // Waiting on another's answer past this asker's own time.
                    None if joined.load(Ordering::Relaxed) && !working.load(Ordering::Relaxed) => {
                        tracing::info!(
                            "an identical question in flight outlasts this one's deadline; the \
                         extractive provider answers it"
                        );
                        self.count(question, extractive::PROVIDER, "fallback");
                        return stand_in();
                    }
                    // Its own answer being made (kept when it comes): bounded by its deadline.
                    None => run.await,
                }
            };
            let for_this_one = role != Role::Joined || shared.for_others;
            if !for_this_one && make.is_some() && asked_again < ASKED_AGAIN_AT_MOST {
                asked_again += 1;
                continue;
            }
            if role == Role::Joined {
                self.count(question, provider, "shared");
            }
            return serde_json::from_value(shared.answer)
                .expect("an answer reads back as it was written");
        }
    }

    /// `make`'s answer, counted, and kept under `key` when it says it may be; with how.
    async fn made<T, F>(
        &self,
        question: &str,
        provider: &str,
        key: Option<&str>,
        make: F,
    ) -> (T, Keep)
    where
        T: serde::Serialize,
        F: std::future::Future<Output = (T, Keep)>,
    {
        let (answer, keep) = make.await;
        let kept_for = match keep {
            Keep::Answer => {
                self.count(question, provider, "made");
                Some(crate::cache::TTL)
            }
            Keep::Briefly => {
                self.count(question, extractive::PROVIDER, "fallback");
                Some(crate::cache::UNUSABLE_TTL)
            }
            Keep::No | Keep::NorShared => {
                self.count(question, extractive::PROVIDER, "fallback");
                None
            }
        };
        if let (Some(cache), Some(key), Some(ttl)) = (&self.cache, key, kept_for) {
            cache.put_for(key, &answer, ttl).await;
        }
        (answer, keep)
    }

    fn count(&self, question: &str, provider: &str, source: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.count_ai_answer(question, provider, source);
        }
    }

    /// The cache key of `question` with `arguments` on `context`, for the producer that will
    /// answer (the vendors and the prompt's templates, or the extractive provider).
    fn key(
        &self,
        question: &str,
        arguments: serde_json::Value,
        prompt: Option<&Prompt>,
        context: &PassageContext,
    ) -> Option<String> {
        let producer = match (&self.llm, prompt) {
            (Some(llm), Some(prompt)) => json!([llm.describe(), prompt.template_version]),
            _ => json!([extractive::PROVIDER, extractive::MODEL]),
        };
        self.cache
            .as_ref()
            .map(|cache| cache.key(&[json!(question), arguments, producer, json!(context)]))
    }

    /// Asks the vendors `prompt` and reads their reply with `parse`: the answer, or why there
    /// is none (logged), for the extractive provider to answer instead.
    ///
    /// The call runs in a task of its own. Past the question's deadline the asker stops
    /// waiting (the extractive provider answers it), but the call goes on to its own timeout:
    /// a vendor answer on its way is paid for, so when it comes it is kept under `key` for the
    /// next asker instead of being dropped.
    async fn ask<T>(
        &self,
        prompt: &Prompt,
        deadline: tokio::time::Instant,
        asker: &str,
        key: Option<&str>,
        parse: impl Fn(&LlmReply) -> Result<(T, usize), LlmError> + Send + 'static,
    ) -> Asked<T>
    where
        T: serde::Serialize + Send + Sync + 'static,
    {
        let Some(llm) = self.llm.clone() else {
            return Asked::NotAnswered;
        };
        // Every vendor asked to be left alone for now: nothing is sent, nor counted.
        if llm.cooling_down() {
            tracing::debug!("the LLM vendors are rate limiting; the extractive provider answers");
            return Asked::NotAnswered;
        }
        // No time left (gathering the context took it): a call now would be paid for and
        // answer nobody.
        if tokio::time::Instant::now() >= deadline {
            return Asked::NotAnswered;
        }
        // This very question's call is still on its way, past an earlier asker's deadline: its
        // answer will be kept; asking again would pay twice.
        if key.is_some_and(|key| self.late_calls.is_pending(key)) {
            return Asked::NotAnswered;
        }
        // So many calls already go on past their askers' deadlines that this one, as slow,
        // would be aborted at its own: paid for and kept nowhere.
        if self.late_calls.is_full() {
            tracing::debug!(
                "the LLM vendors are too slow right now; the extractive provider answers"
            );
            return Asked::NotAnswered;
        }
        // The question taken from the day's budget, to give back should no vendor charge for it.
        let mut taken = None;
        if let Some(budget) = &self.budget {
            match budget.take_with_receipt(asker).await {
                (Taken::Yes, receipt) => taken = receipt.map(|receipt| (budget.clone(), receipt)),
                (Taken::ShareSpent, _) => return Asked::ShareSpent,
                (Taken::BudgetSpent, _) => return Asked::NotAnswered,
            }
        }
        // One deadline for the vendors together (a fallback included), counted from the
        // question, inside the router's subgraph timeout, so that a slow vendor still leaves
        // time for the extractive answer.
        let request = crate::llm::LlmRequest {
            deadline: Some(deadline),
            ..prompt.request.clone()
        };
        let (sender, mut receiver) = tokio::sync::oneshot::channel();
        // Declared after the receiver, so dropped before it should the asker be cancelled:
        // the call is marked late before its answer can no longer be sent here.
        let keep_under = key.filter(|_| self.cache.is_some()).map(str::to_owned);
        let (end, mut watch) = self.late_calls.start(keep_under.clone());
        let cache = self.cache.clone();
        let call = tokio::spawn(async move {
            let _end = end;
            let outcome = llm.complete(&request).await;
            let unpaid = matches!(&outcome, Err(error) if !error.may_be_paid_for());
            let answer = outcome.and_then(|reply| parse(&reply));
            // Refused: the asker stopped waiting and left the call to go on. A usable answer is
            // kept for the next asker.
            if let Err(Ok((answer, _))) = sender.send(answer)
                && let (Some(cache), Some(key)) = (cache, keep_under)
            {
                cache.put(&key, &answer).await;
                tracing::info!(
                    "kept a vendor answer that came after its question's deadline, for the next asker"
                );
            }
            // After the answer is sent: the asker does not wait on Redis for it.
            if let (true, Some((budget, receipt))) = (unpaid, taken) {
                budget.give_back(&receipt).await;
            }
        });
        watch.watching(call.abort_handle());
        let answer = match tokio::time::timeout_at(deadline, &mut receiver).await {
            Ok(Ok(answer)) => {
                watch.answered();
                answer
            }
            // The task ended without sending: it panicked.
            Ok(Err(_)) => {
                watch.answered();
                return Asked::NotAnswered;
            }
            Err(_) => {
                // Marked late (or aborted past the cap) before the channel closes; no answer
                // can slip in unread from here on: a later one is the task's to keep.
                let left_to_go_on = watch.leave();
                receiver.close();
                match receiver.try_recv() {
                    Ok(answer) => {
                        watch.took_it_after_all();
                        answer
                    }
                    Err(_) => {
                        tracing::warn!(
                            deadline_ms = self.vendor_deadline.as_millis() as u64,
                            kept_when_it_comes = left_to_go_on,
                            "the LLM did not answer before the question's deadline; the extractive provider answers"
                        );
                        return Asked::NotAnswered;
                    }
                }
            }
        };
        match answer {
            Ok((answer, invented)) => {
                if invented > 0 {
                    tracing::info!(invented, "dropped citations the model invented");
                    self.invented.fetch_add(invented as u64, Ordering::Relaxed);
                    if let Some(metrics) = &self.metrics {
                        metrics.count_ai_citations_dropped(invented as u64);
                    }
                }
                Asked::Answered(answer)
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    kind = error.kind(),
                    "the LLM gave no usable answer; the extractive provider answers"
                );
                // A reply came (paid for) and could not be used: asking again at once would
                // most likely pay for the same again.
                if matches!(error, LlmError::Malformed { .. }) {
                    Asked::Unusable
                } else {
                    Asked::NotAnswered
                }
            }
        }
    }

    /// What passage `id` means, with an optional `focus` (a word or theme), asked by `asker`
    /// (`user:<id>`, `partner:<id>`: whose share of the vendors' budget it takes).
    pub async fn explain(
        &self,
        asker: &str,
        id: &str,
        focus: Option<&str>,
    ) -> Result<Explanation, AssistantError> {
        let focus = focus.map(spoken_focus).filter(|focus| !focus.is_empty());
        let focus = focus.as_deref();
        if focus.is_some_and(|focus| focus.chars().count() > MAX_FOCUS_CHARS) {
            return Err(AssistantError::Invalid(format!(
                "focus is at most {MAX_FOCUS_CHARS} characters"
            )));
        }
        let deadline = self.deadline();
        let context = self.context(id, deadline).await?;
        let prompt = self.llm.as_ref().map(|_| render_explain(&context, focus));
        let key = self.key(
            "explain",
            json!({"focus": focus.map(focus_key)}),
            prompt.as_ref(),
            &context,
        );
        let late_key = key.clone();
        let read_from = context.clone();
        Ok(self
            .cached(
                "explain",
                key,
                deadline,
                || extractive::explain(&context, focus),
                async {
                    if let Some(prompt) = &prompt {
                        let asked = self
                            .ask(prompt, deadline, asker, late_key.as_deref(), move |reply| {
                                parse_explanation(reply, &read_from)
                            })
                            .await;
                        return asked.or_stand_in(|| extractive::explain(&context, focus));
                    }
                    (extractive::explain(&context, focus), Keep::Answer)
                },
            )
            .await)
    }

    /// `count` (1 to 10, default 5) questions to study passage `id` with, asked by `asker`.
    pub async fn study_questions(
        &self,
        asker: &str,
        id: &str,
        count: Option<i32>,
    ) -> Result<Vec<StudyQuestion>, AssistantError> {
        let count = match count {
            None => DEFAULT_QUESTIONS,
            Some(count) if (1..=MAX_QUESTIONS as i32).contains(&count) => count as u32,
            Some(_) => {
                return Err(AssistantError::Invalid(format!(
                    "count is from 1 to {MAX_QUESTIONS}"
                )));
            }
        };
        let deadline = self.deadline();
        let context = self.context(id, deadline).await?;
        let prompt = self.llm.as_ref().map(|_| render_questions(&context, count));
        let key = self.key(
            "questions",
            json!({"count": count}),
            prompt.as_ref(),
            &context,
        );
        let late_key = key.clone();
        let read_from = context.clone();
        Ok(self
            .cached(
                "questions",
                key,
                deadline,
                || extractive::study_questions(&context, count as usize),
                async {
                    if let Some(prompt) = &prompt {
                        let asked = self
                            .ask(prompt, deadline, asker, late_key.as_deref(), move |reply| {
                                let (mut questions, invented) = parse_questions(reply, &read_from)?;
                                questions.truncate(count as usize);
                                Ok((questions, invented))
                            })
                            .await;
                        return asked
                            .or_stand_in(|| extractive::study_questions(&context, count as usize));
                    }
                    (
                        extractive::study_questions(&context, count as usize),
                        Keep::Answer,
                    )
                },
            )
            .await)
    }

    /// Passages connected to passage `id`, and why, asked by `asker`.
    pub async fn suggest_connections(
        &self,
        asker: &str,
        id: &str,
    ) -> Result<Vec<Connection>, AssistantError> {
        let deadline = self.deadline();
        let context = self.context(id, deadline).await?;
        let prompt = self
            .llm
            .as_ref()
            .map(|_| render_connections(&context, MAX_CONNECTIONS.min(5)));
        let key = self.key("connections", json!({}), prompt.as_ref(), &context);
        let late_key = key.clone();
        let read_from = context.clone();
        Ok(self
            .cached(
                "connections",
                key,
                deadline,
                || extractive::suggest_connections(&context),
                async {
                    if let Some(prompt) = &prompt {
                        let asked = self
                            .ask(prompt, deadline, asker, late_key.as_deref(), move |reply| {
                                let (mut connections, invented) =
                                    parse_connections(reply, &read_from)?;
                                connections.truncate(MAX_CONNECTIONS.min(5) as usize);
                                Ok((connections, invented))
                            })
                            .await;
                        return asked.or_stand_in(|| extractive::suggest_connections(&context));
                    }
                    (extractive::suggest_connections(&context), Keep::Answer)
                },
            )
            .await)
    }
}

/// A reader's focus as the prompt has it: its words once apart, without the punctuation
/// around it ("  Grace?! " is "Grace"); letters, marks and digits are kept as written.
pub fn spoken_focus(focus: &str) -> String {
    focus
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_matches(|c: char| is_surrounding_punctuation(c) || c.is_whitespace())
        .to_owned()
}

/// A reader's focus as the cache has it: [`spoken_focus`] in lower case. "Grace", "grace." and
/// " grace " are one question, one cache entry and one vendor call; a caller cannot make each
/// variant a paid call of its own.
pub fn focus_key(focus: &str) -> String {
    spoken_focus(focus).to_lowercase()
}

/// Punctuation a focus may be wrapped in or end with (ASCII, and the quotes, marks and dashes
/// of other scripts); never a letter or a combining mark.
fn is_surrounding_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '¿' | '¡'
                | '«'
                | '»'
                | '‹'
                | '›'
                | '“'
                | '”'
                | '„'
                | '‘'
                | '’'
                | '…'
                | '–'
                | '—'
                | '·'
                | '。'
                | '、'
                | '！'
                | '？'
                | '״'
                | '׳'
                | '؟'
                | '،'
        )
}

#[cfg(test)]
mod focus_tests {
    use super::{focus_key, spoken_focus};

    #[test]
    fn variants_of_one_focus_are_one_question() {
        for variant in [
            "Grace",
            "grace.",
            "  GRACE?! ",
            "\"grace\"",
            "¿grace?",
            "«grace»",
        ] {
            assert_eq!(focus_key(variant), "grace", "{variant}");
        }
        assert_eq!(focus_key("God's   love!"), "god's love");
        assert_eq!(focus_key(" ... "), "");
        assert_eq!(focus_key(". . ."), "");
        assert_eq!(spoken_focus(". . Grace . ."), "Grace");
        assert_ne!(focus_key("faith"), focus_key("grace"));
        // As the prompt has it: the case kept, a combining mark at the end too.
        assert_eq!(spoken_focus(" \"God's   Love\"! "), "God's Love");
        assert_eq!(spoken_focus("cafe\u{301}."), "cafe\u{301}");
        assert_eq!(spoken_focus("שָׁלוֹם"), "שָׁלוֹם");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use gospelib_kit::stores::BoxFuture;
    use serde_json::Value;

    use super::*;

    /// No content: these tests make their answers themselves.
    struct NoContent;

    impl ContentSource for NoContent {
        fn run(&self, _: &'static str, _: Value) -> BoxFuture<'_, Result<Value, String>> {
            Box::pin(async { Err("not asked in these tests".to_owned()) })
        }
    }

    /// The question "explain" under the key `k`, made by `make` unless it is in flight; a
    /// minute to wait for it.
    async fn explained(
        assistant: &Assistant,
        make: impl std::future::Future<Output = (String, Keep)>,
    ) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let gave_up = || "gave up waiting".to_owned();
        assistant
            .cached("explain", Some("k".to_owned()), deadline, gave_up, make)
            .await
    }

    /// What a second asker of one question gets while the first's answer is being made, the
    /// first's made as `leader_keeps`; whether the second's own answer was made.
    async fn follower_of(leader_keeps: Keep) -> (String, String, bool) {
        let assistant = Arc::new(Assistant::new(Arc::new(NoContent), None, None));
        let release = Arc::new(tokio::sync::Notify::new());
        let leader = tokio::spawn({
            let (assistant, release) = (assistant.clone(), release.clone());
            async move {
                let make = async move {
                    release.notified().await;
                    ("stand-in".to_owned(), leader_keeps)
                };
                explained(&assistant, make).await
            }
        });
        while assistant.in_flight.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        let made = Arc::new(AtomicBool::new(false));
        let follower = tokio::spawn({
            let (assistant, made) = (assistant.clone(), made.clone());
            async move {
                let make = async move {
                    made.store(true, Ordering::SeqCst);
                    ("the vendor's".to_owned(), Keep::Answer)
                };
                explained(&assistant, make).await
            }
        });
        // Time for the second to join the first's question.
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.notify_one();
        let (leader, follower) = (leader.await.unwrap(), follower.await.unwrap());
        (leader, follower, made.load(Ordering::SeqCst))
    }

    /// The first asker's share was spent: the one waiting for the same question asks it
    /// itself (its own share may allow it) instead of taking the first's stand-in.
    #[tokio::test]
    async fn an_answer_refused_by_its_askers_share_is_asked_again_by_those_waiting() {
        let (leader, follower, made) = follower_of(Keep::NorShared).await;
        assert_eq!(leader, "stand-in");
        assert_eq!(follower, "the vendor's");
        assert!(made);
    }

    /// The vendors did not answer the first asker: the one waiting takes the same stand-in,
    /// and nothing is asked again.
    #[tokio::test]
    async fn an_answer_the_vendors_did_not_give_is_shared() {
        let (leader, follower, made) = follower_of(Keep::No).await;
        assert_eq!(
            (leader.as_str(), follower.as_str()),
            ("stand-in", "stand-in")
        );
        assert!(!made);
    }
}
