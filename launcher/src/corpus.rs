//! `gospelib corpus …`: the corpus jobs, with their reports on stdout.

use std::path::Path;

use anyhow::Context;
use gospelib_content::import::{self, ImportOptions};

/// `gospelib corpus import`: writes `<data>/corpus` (and the fixture when asked), prints the
/// report as JSON.
pub fn run_import(data: &Path, fixture: Option<&Path>) -> anyhow::Result<()> {
    let options = ImportOptions {
        downloads: data.join("downloads"),
        work: data.join("work"),
        out: data.join("corpus"),
    };
    let (corpus, report) = import::import(&options).context("corpus import")?;
    if let Some(fixture) = fixture {
        import::write(&import::excerpt(&corpus), fixture, true).context("writing the fixture")?;
        gospelib_content::corpus::load(fixture).context("the fixture does not validate")?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
