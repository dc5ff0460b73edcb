//! GospeLib's plans, from `config/plans.toml`: their prices, what each unlocks (entitlements,
//! which are also the scopes `@requiresScopes` checks), the trial, and the rate-limit buckets
//! with each plan's allowance. Billing serves them; the router enforces them.
//!
//! The file is read once and validated as a whole: every plan's limits name known buckets and
//! give each bucket a positive allowance, the default and trial plans exist, every bucket's
//! fields are `Type.field` coordinates, and no field is in two buckets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The file the binaries carry (the repository's `config/plans.toml`).
pub const BUILT_IN: &str = include_str!("../../../config/plans.toml");

/// The whole catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plans {
    /// The plan of users without a subscription, and of anonymous callers.
    pub default_plan: String,
    /// The plan whose limits partners' API keys get (their scopes come with the key).
    pub partner_plan: String,
    pub trial: Trial,
    pub buckets: BTreeMap<String, Bucket>,
    pub plans: BTreeMap<String, Plan>,
}

/// The trial every new user gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub plan: String,
    pub days: u32,
}

impl Trial {
    pub fn length(&self) -> Duration {
        Duration::from_secs(u64::from(self.days) * 24 * 3600)
    }
}

/// What a rate limit counts, and over what window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub window: Window,
    /// Root fields (`Query.search`) an operation uses this bucket's requests for.
    pub fields: Vec<String>,
    /// How many requests an operation takes: one, or one per root field it selects (aliases
    /// counted), for buckets whose every field is costly on its own (the AI's).
    #[serde(default)]
    pub charge: Charge,
}

/// How many requests of a bucket one operation takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Charge {
    /// One per operation, however many of the bucket's fields it selects.
    #[default]
    Operation,
    /// One per root field of the bucket the operation selects (`a: f, b: f` is two).
    Field,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Minute,
    Hour,
}

impl Window {
    pub fn duration(self) -> Duration {
        match self {
            Window::Minute => Duration::from_secs(60),
            Window::Hour => Duration::from_secs(3600),
        }
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub monthly_cents: u32,
    pub yearly_cents: u32,
    /// What the plan unlocks; each is a scope for `@requiresScopes`.
    pub entitlements: Vec<String>,
    /// Requests per bucket window, by bucket name.
    pub limits: BTreeMap<String, u32>,
    /// Stripe price ids by billing interval (`monthly`, `yearly`); none for a free plan.
    #[serde(default)]
    pub stripe_prices: BTreeMap<String, String>,
}

/// Why a plans file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlansError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the plans file is not valid: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("the plans file is not consistent: {0}")]
    Inconsistent(String),
}

impl Plans {
    /// The catalogue the binary was built with.
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("config/plans.toml is valid (checked by the kit's tests)")
    }

    /// The catalogue in `path`.
    pub fn from_file(path: &Path) -> Result<Self, PlansError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlansError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates a catalogue.
    pub fn parse(text: &str) -> Result<Self, PlansError> {
        let plans: Plans = toml::from_str(text)?;
        plans.validate().map_err(PlansError::Inconsistent)?;
        Ok(plans)
    }

    fn validate(&self) -> Result<(), String> {
        for (role, id) in [
            ("default_plan", &self.default_plan),
            ("partner_plan", &self.partner_plan),
            ("trial.plan", &self.trial.plan),
        ] {
            if !self.plans.contains_key(id) {
                return Err(format!("{role} names {id:?}, which is not a plan"));
            }
        }
        if self.trial.days == 0 {
            return Err("trial.days must be at least 1".to_owned());
        }
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, bucket) in &self.buckets {
            for field in &bucket.fields {
                let well_formed = field
                    .split_once('.')
                    .is_some_and(|(ty, f)| !ty.is_empty() && !f.is_empty() && !f.contains('.'));
                if !well_formed {
                    return Err(format!("bucket {name:?}: {field:?} is not `Type.field`"));
                }
                if let Some(other) = owner.insert(field, name) {
                    return Err(format!("{field} is in both buckets {other:?} and {name:?}"));
                }
            }
        }
        for (id, plan) in &self.plans {
            for bucket in self.buckets.keys() {
                match plan.limits.get(bucket) {
                    Some(0) | None => {
                        return Err(format!(
                            "plan {id:?} needs a positive limit for bucket {bucket:?}"
                        ));
                    }
                    Some(_) => {}
                }
            }
            if let Some(unknown) = plan.limits.keys().find(|b| !self.buckets.contains_key(*b)) {
                return Err(format!("plan {id:?} limits an unknown bucket {unknown:?}"));
            }
            if let Some(interval) = plan
                .stripe_prices
                .keys()
                .find(|i| !["monthly", "yearly"].contains(&i.as_str()))
            {
                return Err(format!(
                    "plan {id:?} has a price for {interval:?}: intervals are monthly and yearly"
                ));
            }
        }
        Ok(())
    }

    /// The plan `id`, or the default plan when there is no such plan.
    pub fn plan_or_default(&self, id: Option<&str>) -> (&str, &Plan) {
        id.and_then(|id| self.plans.get_key_value(id))
            .map(|(id, plan)| (id.as_str(), plan))
            .unwrap_or_else(|| {
                let plan = &self.plans[&self.default_plan];
                (self.default_plan.as_str(), plan)
            })
    }

    /// The bucket a root field (`Query.search`) counts against, if any.
    pub fn bucket_of(&self, coordinate: &str) -> Option<&str> {
        self.buckets
            .iter()
            .find(|(_, bucket)| bucket.fields.iter().any(|f| f == coordinate))
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_file_is_valid_and_says_what_the_product_rules_say() {
        let plans = Plans::built_in();
        assert_eq!(plans.default_plan, "reader");
        assert_eq!(
            (plans.trial.plan.as_str(), plans.trial.days),
            ("scholar", 14)
        );
        let limits = |id: &str| plans.plans[id].limits.clone();
        assert_eq!(limits("reader")["passages"], 60);
        assert_eq!(limits("scholar")["search"], 200);
        assert_eq!(limits("academic")["search"], 1000);
        assert_eq!(limits("academic")["ai"], 200);
        assert_eq!(plans.plans["scholar"].monthly_cents, 799);
        assert_eq!(plans.plans["academic"].yearly_cents, 14999);
        assert!(plans.plans["reader"].entitlements.is_empty());
        assert!(
            plans.plans["scholar"]
                .entitlements
                .contains(&"interlinear".to_owned())
        );
        assert_eq!(plans.bucket_of("Query.search"), Some("search"));
        assert_eq!(plans.bucket_of("Query.topics"), Some("passages"));
        assert_eq!(plans.bucket_of("Query.me"), Some("account"));
        // Each AI answer costs a vendor call, each search a Typesense query, each lexicon
        // entry a read: charged per field (aliases count); passages per operation.
        assert_eq!(plans.buckets["ai"].charge, Charge::Field);
        assert_eq!(plans.buckets["search"].charge, Charge::Field);
        assert_eq!(plans.buckets["lexicon"].charge, Charge::Field);
        assert_eq!(plans.buckets["passages"].charge, Charge::Operation);
        // Each of the explorer's neighbourhoods is up to eleven graph queries: twenty aliased
        // in one operation are twenty, not one of the passages bucket.
        assert_eq!(plans.bucket_of("Query.connections"), Some("explorer"));
        assert_eq!(plans.buckets["explorer"].charge, Charge::Field);
        assert_eq!(limits("scholar")["explorer"], 120);
        assert_eq!(plans.plan_or_default(Some("nonesuch")).0, "reader");
    }

    /// A root field in no bucket may be asked without limit. Left out: `plans` and
    /// `callerAccess` (configuration, no store). `me` is limited too: it reads only the
    /// caller's own data, but each operation is PostgreSQL reads (`me { searchNotes }` a
    /// full-text search), which a script could otherwise repeat without end.
    #[test]
    fn every_root_field_that_reads_a_store_or_holds_a_stream_is_limited() {
        const NOT_LIMITED: [&str; 2] = ["Query.plans", "Query.callerAccess"];
        let supergraph = include_str!("../../../schema/supergraph.graphql");
        let plans = Plans::built_in();
        let mut fields = Vec::new();
        for root in ["Query", "Subscription"] {
            let body = supergraph
                .split(&format!("\ntype {root}"))
                .nth(1)
                .and_then(|rest| rest.split("\n}").next())
                .unwrap_or_else(|| panic!("the supergraph has a {root} type"));
            // Fields only: not their descriptions, nor the arguments of a field written one
            // a line.
            let mut in_description = false;
            let mut depth = 0usize;
            for line in body.lines() {
                let line = line.trim();
                if let Some(rest) = line.strip_prefix("\"\"\"") {
                    if !rest.ends_with("\"\"\"") {
                        in_description = !in_description;
                    }
                    continue;
                }
                if in_description {
                    continue;
                }
                let at = depth;
                depth =
                    (depth + line.matches('(').count()).saturating_sub(line.matches(')').count());
                if at > 0 {
                    continue;
                }
                let name: String = line
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let is_field = !name.is_empty()
                    && line[name.len()..].starts_with(['(', ':'])
                    && !line.starts_with('@');
                if is_field {
                    fields.push(format!("{root}.{name}"));
                }
            }
            // Out of step (a parenthesis in a string, a description closed on a text line),
            // it would have skipped the fields after that point unseen.
            assert!(
                depth == 0 && !in_description,
                "{root}: the field reader lost its place in the SDL"
            );
        }
        assert!(fields.len() > 12, "{fields:?}");
        assert!(fields.contains(&"Subscription.ingestCompleted".to_owned()));
        assert!(
            fields.contains(&"Query.connections".to_owned()),
            "{fields:?}"
        );
        for field in fields {
            if !NOT_LIMITED.contains(&field.as_str()) {
                assert!(plans.bucket_of(&field).is_some(), "{field} is in no bucket");
            }
        }
    }

    /// The assistant reads a passage's interlinear words for its answers (it asks content as
    /// a caller with the interlinear scope): a plan with the assistant must have the
    /// interlinear too, or the assistant would hand its words to callers without it.
    #[test]
    fn every_plan_with_the_assistant_has_the_interlinear() {
        for (id, plan) in &Plans::built_in().plans {
            let has = |scope: &str| plan.entitlements.iter().any(|e| e == scope);
            assert!(!has("ai_features") || has("interlinear"), "plan {id}");
        }
    }

    #[test]
    fn inconsistent_files_are_refused_with_the_reason() {
        let good = BUILT_IN;
        for (change, expected) in [
            (
                good.replace("default_plan = \"reader\"", "default_plan = \"gold\""),
                "default_plan names \"gold\"",
            ),
            (
                good.replace("passages = 60,", "passages = 0,"),
                "positive limit for bucket \"passages\"",
            ),
            (
                good.replace(
                    "fields = [\"Query.search\"]",
                    "fields = [\"Query.passage\"]",
                ),
                "in both buckets",
            ),
            (good.replace("days = 14", "days = 0"), "trial.days"),
            (
                good.replace("window = \"hour\"", "window = \"fortnight\""),
                "unknown variant",
            ),
        ] {
            let error = Plans::parse(&change).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
