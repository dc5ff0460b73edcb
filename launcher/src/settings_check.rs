//! `gospelib settings check`: are a deployment's `GOSPELIB_*` settings ones this binary
//! accepts? Checked without connecting to anything.
//!
//! The check runs the typed readers the checked command runs at start-up, on an environment
//! file (or this process's environment): for `serve`, the shared settings (the in-process
//! router's included), and each chosen part's own; for the jobs, theirs; for every command,
//! the telemetry's. It prints every problem, and every variable the file sets that no reader
//! asked for (a typo, or a setting of another command or part: [`Env::unconsulted`]), and
//! fails with exit status 2 on any. `scripts/deploy check` runs it for each container of the
//! Kubernetes manifests and the compose file, with that container's environment and command.

use std::fmt;
use std::path::Path;

use gospelib_kit::config::{ConfigError, Env};
use gospelib_kit::telemetry::OtlpSettings;

use crate::parts;
use crate::settings::{MigrateSettings, ServeSettings, read_ingest_settings};

/// The commands whose settings can be checked: those deployments run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `gospelib serve [--only …]`.
    Serve { only: Vec<String> },
    /// `gospelib migrate`.
    Migrate,
    /// `gospelib ingest`.
    Ingest,
    /// `gospelib corpus import`: no settings beyond the telemetry's.
    CorpusImport,
    /// `gospelib jobs reminders`.
    Reminders,
    /// `gospelib schema publish|rollback|history|diff`: the registry's published versions.
    Schema(&'static str),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serve { only } if only.is_empty() => f.write_str("serve"),
            Self::Serve { only } => write!(f, "serve --only {}", only.join(",")),
            Self::Migrate => f.write_str("migrate"),
            Self::Ingest => f.write_str("ingest"),
            Self::CorpusImport => f.write_str("corpus import"),
            Self::Reminders => f.write_str("jobs reminders"),
            Self::Schema(subcommand) => write!(f, "schema {subcommand}"),
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The variables the environment sets.
    pub set: usize,
    /// Each refused value, missing setting, or command-line problem, one line each.
    pub problems: Vec<String>,
    /// The variables set that no reader of the command asked for.
    pub unused: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.unused.is_empty()
    }
}

/// The settings check failed; the report printed says why (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("the settings check failed")]
pub struct CheckFailed;

/// Runs every settings reader of `target` on `env` and reports problems and unused variables.
/// `env` must be a fresh snapshot: names consulted by earlier readers count as read.
pub fn check(env: &Env, target: &Target) -> Report {
    let mut problems = Vec::new();
    // Every command starts its telemetry first: the log filter, then trace export.
    collect(
        &mut problems,
        gospelib_kit::telemetry::log_filter_from_env(env),
    );
    let service = match target {
        Target::Serve { only } if !only.is_empty() => only.join(","),
        _ => "gospelib".to_owned(),
    };
    collect(&mut problems, OtlpSettings::from_env(env, &service));
    match target {
        Target::Serve { only } => {
            let chosen = parts::select(only);
            // As `serve` reads them: the registry alone needs no key.
            let needs_keys = only.is_empty() || chosen.as_ref().is_ok_and(|c| !c.is_empty());
            let settings = ServeSettings::read_for(env, needs_keys);
            if let (Ok(settings), true) = (&settings, only.is_empty()) {
                collect(&mut problems, settings.router_identity());
            }
            if let (Ok(settings), Ok(chosen)) = (&settings, &chosen) {
                for name in parts::needed_caller_keys(chosen, env) {
                    collect(&mut problems, parts::caller_key(settings, name));
                }
                for part in chosen {
                    collect(
                        &mut problems,
                        parts::previous_caller_key(settings, part.name),
                    );
                }
            }
            collect(&mut problems, settings);
            match chosen {
                Ok(chosen) => {
                    for part in chosen {
                        collect(&mut problems, (part.check)(env));
                    }
                }
                Err(unknown) => problems.push(unknown.to_string()),
            }
        }
        Target::Migrate => collect(&mut problems, MigrateSettings::read(env)),
        Target::Ingest => collect(&mut problems, read_ingest_settings(env)),
        Target::CorpusImport => {}
        Target::Reminders => collect(&mut problems, crate::jobs::reminder_settings(env)),
        Target::Schema(_) => collect(
            &mut problems,
            crate::registry::RegistrySettings::read(env, true),
        ),
    }
    let unused = env.unconsulted();
    let read = env.consulted();
    let set = unused.len() + read.iter().filter(|name| env.get(name).is_some()).count();
    Report {
        set,
        problems,
        unused,
    }
}

/// A reader's problems, one line each (a reader that reports through `anyhow` carries a
/// [`ConfigError`] too).
fn collect<T, E: Into<anyhow::Error>>(problems: &mut Vec<String>, result: Result<T, E>) {
    let Err(error) = result else {
        return;
    };
    let error: anyhow::Error = error.into();
    match error.downcast_ref::<ConfigError>() {
        Some(config) => problems.extend(config.problems.iter().map(ToString::to_string)),
        None => problems.push(format!("{error:#}")),
    }
}

/// `gospelib settings check`: the environment from `env_file` (alone) or from this process,
/// checked for `target` (or the command line that could not be parsed into one), with the
/// report on stdout.
pub fn run(env_file: Option<&Path>, target: Result<Target, String>) -> anyhow::Result<()> {
    let (env, source) = match env_file {
        None => (Env::from_process(), "the environment".to_owned()),
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|error| anyhow::anyhow!("reading {shown}: {error}"))?;
            match Env::default().under_file(&text, &shown) {
                Ok(env) => (env, shown),
                Err(error) => {
                    println!("settings check of {shown}: 1 problem");
                    println!("  - {error}");
                    return Err(CheckFailed.into());
                }
            }
        }
    };
    let target = match target {
        Ok(target) => target,
        Err(usage) => {
            println!("settings check of {source}: the command line is refused");
            for line in usage.lines().filter(|l| !l.trim().is_empty()) {
                println!("  {line}");
            }
            return Err(CheckFailed.into());
        }
    };
    let report = check(&env, &target);
    print!("{}", render(&report, &target, &source));
    if report.passed() {
        Ok(())
    } else {
        Err(CheckFailed.into())
    }
}

/// The report for people: a summary line, then one line per problem and unused variable.
pub fn render(report: &Report, target: &Target, source: &str) -> String {
    let mut text = format!("settings check of `gospelib {target}` with {source}: ");
    if report.passed() {
        text.push_str(&format!(
            "{} setting{} set, every one read and accepted\n",
            report.set,
            if report.set == 1 { "" } else { "s" }
        ));
        return text;
    }
    let count = report.problems.len() + report.unused.len();
    text.push_str(&format!(
        "{count} problem{}\n",
        if count == 1 { "" } else { "s" }
    ));
    for problem in &report.problems {
        text.push_str(&format!("  - {problem}\n"));
    }
    for name in &report.unused {
        text.push_str(&format!(
            "  - {name} is set, but `gospelib {target}` reads no such setting\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// What `gospelib serve --only content` needs.
    fn content_pod() -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "GOSPELIB_PG_URL",
                "postgres://gospelib:pw@postgres:5432/gospelib",
            ),
            ("GOSPELIB_REDIS_URL", "redis://redis:6379"),
            ("GOSPELIB_FALKORDB_URL", "falkor://falkordb:6379"),
            ("GOSPELIB_TYPESENSE_URL", "http://typesense:8108"),
            ("GOSPELIB_TYPESENSE_API_KEY", "k"),
            ("GOSPELIB_INTERNAL_SECRET", SECRET),
            ("GOSPELIB_ROUTER_LISTEN", "0.0.0.0:4000"),
            ("GOSPELIB_INTERNAL_LISTEN", "0.0.0.0:4001"),
            ("GOSPELIB_LOG", "info"),
        ]
    }

    fn serve(only: &[&str]) -> Target {
        Target::Serve {
            only: only.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn a_good_environment_passes() {
        let report = check(&Env::from_pairs(content_pod()), &serve(&["content"]));
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.set, content_pod().len());
    }

    #[test]
    fn an_unknown_name_is_reported() {
        let mut pairs = content_pod();
        pairs.push(("GOSPELIB_ROUTER_MAX_COSTS", "100"));
        let report = check(&Env::from_pairs(pairs), &serve(&["content"]));
        assert!(report.problems.is_empty(), "{report:?}");
        assert_eq!(report.unused, ["GOSPELIB_ROUTER_MAX_COSTS"]);
        let text = render(&report, &serve(&["content"]), "f.env");
        assert!(
            text.contains(
                "GOSPELIB_ROUTER_MAX_COSTS is set, but `gospelib serve --only content` reads no such setting"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_setting_of_another_part_is_unused_here() {
        let mut pairs = content_pod();
        pairs.push(("GOSPELIB_AI_CONTENT_URL", "http://content:4001/graphql"));
        let report = check(&Env::from_pairs(pairs.clone()), &serve(&["content"]));
        assert_eq!(report.unused, ["GOSPELIB_AI_CONTENT_URL"]);
        assert!(check(&Env::from_pairs(pairs), &serve(&["ai"])).passed());
    }

    #[test]
    fn a_bad_value_and_a_missing_part_setting_are_reported() {
        let mut pairs = content_pod();
        pairs.push(("GOSPELIB_FALKORDB_TIMEOUT_MS", "soon"));
        let report = check(&Env::from_pairs(pairs), &serve(&["content", "accounts"]));
        assert_eq!(report.problems.len(), 2, "{report:?}");
        assert!(
            report.problems[0].starts_with("GOSPELIB_FALKORDB_TIMEOUT_MS has a bad value \"soon\""),
            "{report:?}"
        );
        assert!(
            report.problems[1].starts_with("GOSPELIB_CLERK_WEBHOOK_SECRET is not set"),
            "{report:?}"
        );
        assert!(!report.passed());
    }

    #[test]
    fn an_unknown_part_is_a_problem() {
        let report = check(&Env::from_pairs(content_pod()), &serve(&["contents"]));
        assert_eq!(report.problems.len(), 1, "{report:?}");
        assert!(report.problems[0].contains("unknown part \"contents\""));
    }

    #[test]
    fn each_job_reads_only_its_own_settings() {
        // A fresh snapshot each time: the record of consulted names belongs to one check.
        let env = || {
            Env::from_pairs([
                (
                    "GOSPELIB_PG_URL",
                    "postgres://gospelib:pw@postgres:5432/gospelib",
                ),
                ("GOSPELIB_REMINDER_HOUR", "7"),
            ])
        };
        assert!(check(&env(), &Target::Reminders).passed());
        let report = check(&env(), &Target::Migrate);
        assert_eq!(report.unused, ["GOSPELIB_REMINDER_HOUR"]);
        let report = check(
            &Env::from_pairs([("GOSPELIB_REMINDER_HOUR", "25")]),
            &Target::Reminders,
        );
        assert_eq!(report.problems.len(), 2, "{report:?}");
    }
}
