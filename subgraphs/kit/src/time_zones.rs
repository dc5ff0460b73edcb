//! PostgreSQL's time zone names (its IANA database, `pg_timezone_names`), read once per
//! process and found in any case: `america/los_angeles` is `America/Los_Angeles`. Only names
//! found here are bound to `AT TIME ZONE`, where an unknown one fails the statement.

use std::collections::{HashMap, HashSet};

use sqlx::PgPool;

/// The names, once read.
struct Names {
    exact: HashSet<String>,
    /// Each name by its lower case (the first of names differing only in case).
    by_lower_case: HashMap<String, String>,
}

impl Names {
    fn new(names: Vec<String>) -> Self {
        let mut by_lower_case = HashMap::with_capacity(names.len());
        for name in &names {
            by_lower_case
                .entry(name.to_lowercase())
                .or_insert_with(|| name.clone());
        }
        Self {
            exact: names.into_iter().collect(),
            by_lower_case,
        }
    }

    fn canonical<'a>(&'a self, zone: &'a str) -> Option<&'a str> {
        if crate::time::is_zone_database_copy(zone) {
            return None;
        }
        if self.exact.contains(zone) {
            return Some(zone);
        }
        self.by_lower_case
            .get(&zone.to_lowercase())
            .map(String::as_str)
    }
}

/// The time zone names of one process, read from PostgreSQL at their first use.
#[derive(Default)]
pub struct TimeZones {
    names: tokio::sync::OnceCell<Names>,
}

impl TimeZones {
    /// `zone` as PostgreSQL spells it, if it is a time zone it knows (an IANA name such as
    /// `America/Los_Angeles`, or `UTC`, in any case; not its `posix/` and `right/` copies).
    /// The names are read from `pool` the first time.
    pub async fn canonical(
        &self,
        pool: &PgPool,
        zone: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let names = self
            .names
            .get_or_try_init(|| async {
                let names: Vec<String> = sqlx::query_scalar("SELECT name FROM pg_timezone_names")
                    .fetch_all(pool)
                    .await?;
                Ok::<_, sqlx::Error>(Names::new(names))
            })
            .await?;
        Ok(names.canonical(zone).map(str::to_owned))
    }
}
