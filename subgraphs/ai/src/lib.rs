//! The ai subgraph: GospeLib's study assistant. Readers ask what a passage means, for questions
//! to study, and for connections they missed; every answer is grounded in the scripture graph
//! and cites it by ids (passages, lexicon entries, topics) that resolve through federation into
//! content's entities.
//!
//! - [`context`]: what the graph says about a passage (the passage, its neighbours, its
//!   cross-references ranked, its words with their lexicon entries, its topics), bounded in
//!   size; the only ids an answer may cite;
//! - [`content`]: gathering that context from content's GraphQL API (in process or over HTTP);
//! - [`cache`]: answers kept in Redis for an hour, by a digest of what produced them;
//! - [`assistant`]: a question answered, in order: arguments checked, context gathered,
//!   cache asked, answer made (an LLM, or the extractive provider), citations checked;
//! - [`late_calls`]: vendor calls left to finish after their asker stopped waiting, their
//!   answers kept for the next asker;
//! - [`schema`]: the GraphQL subgraph (`explainPassage`, `studyQuestions`,
//!   `suggestConnections`, gated by the `ai_features` entitlement; `union Citation`);
//! - [`answer`]: an answer (`text`, `provider`, `model`, citations) and the citation ids;
//! - [`extractive`]: the built-in provider that answers from the context alone, without any
//!   vendor (deterministic: it works offline and in tests);
//! - [`llm`]: the `LlmClient` trait and its real HTTP clients, Anthropic's Messages API
//!   (primary) and an OpenAI-compatible chat completions API (fallback), with the versioned
//!   prompt templates in `prompts/`.

pub mod answer;
pub mod assistant;
pub mod budget;
pub mod cache;
pub mod content;
pub mod context;
pub mod extractive;
pub mod late_calls;
pub mod llm;
pub mod schema;

pub use schema::{AiService, NAME, federation_sdl, subgraph};
