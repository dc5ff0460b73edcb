//! The git checkout `gospelib schema publish` runs in (its working directory): the commit
//! checked out, and whether its history holds the commit the latest version was published
//! from (see `gospelib_schema::publish`'s lineage). Outside a git checkout, or without git,
//! there is no lineage: the version is published without a commit.

use std::process::{Command, Stdio};

use gospelib_schema::publish::Lineage;

/// The checkout's lineage with respect to `latest_commit` (the latest version's, if it has
/// one); `None` when git cannot say which commit is checked out.
pub fn lineage(latest_commit: Option<&str>) -> Option<Lineage> {
    let output = git()
        .args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    if !is_commit_id(&commit) {
        return None;
    }
    Some(Lineage {
        holds_latest: latest_commit.map(holds),
        commit,
    })
}

/// Whether the history of the commit checked out holds `commit`: false too when git does not
/// know it (another branch not fetched, a shallow clone) or it is no commit id.
fn holds(commit: &str) -> bool {
    is_commit_id(commit)
        && git()
            .args(["merge-base", "--is-ancestor", commit, "HEAD"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// A full commit id (SHA-1 or SHA-256, in hex): never taken for an option or a revision
/// expression.
fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

fn git() -> Command {
    let mut command = Command::new("git");
    command.stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_commit_ids_are_asked_about() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0123456789abcdef".repeat(4)));
        assert!(!is_commit_id("HEAD"));
        assert!(!is_commit_id("--all"));
        assert!(!is_commit_id(&"g".repeat(40)));
        assert!(!holds("--output=/tmp/x"));
    }
}
