//! SWORD modules exported with `mod2imp`: entries `$$$key` followed by their markup.

use std::path::Path;
use std::process::Command;

use super::ImportError;

/// One exported entry: its key and its markup (lines joined).
pub struct Entry {
    pub key: String,
    pub body: String,
}

/// Runs `mod2imp <module>` against the SWORD tree under `sword_path` and splits its output.
pub fn export(sword_path: &Path, module: &str) -> Result<Vec<Entry>, ImportError> {
    let output = Command::new("mod2imp")
        .arg(module)
        .env("SWORD_PATH", sword_path)
        .output()
        .map_err(|e| {
            ImportError::Tool(format!(
                "cannot run mod2imp ({e}): install the Debian package libsword-utils"
            ))
        })?;
    if !output.status.success() {
        return Err(ImportError::Tool(format!(
            "mod2imp {module} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|e| ImportError::Source(format!("mod2imp {module}: not UTF-8: {e}")))?;
    Ok(split_entries(&text))
}

/// Splits `$$$key\nbody…` text into entries.
pub fn split_entries(text: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        if let Some(key) = line.strip_prefix("$$$") {
            entries.push(Entry {
                key: key.to_owned(),
                body: String::new(),
            });
        } else if let Some(entry) = entries.last_mut() {
            if !entry.body.is_empty() {
                entry.body.push('\n');
            }
            entry.body.push_str(line);
        }
    }
    entries
}
