//! Embeds the apps' operations (`client-tests/operations/{web,mobile}/*.graphql`) so
//! `gospelib serve` holds the trusted documents of its own commit, as it holds its parts' SDL;
//! rebuilt when an operation changes.

use std::path::Path;

fn main() {
    let operations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client-tests/operations");
    println!("cargo:rerun-if-changed={}", operations.display());
    let mut files = Vec::new();
    for app in ["web", "mobile"] {
        let Ok(entries) = std::fs::read_dir(operations.join(app)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable operations folder").path();
            if path.extension().is_some_and(|ext| ext == "graphql") {
                files.push(path.canonicalize().expect("an operation's path"));
            }
        }
    }
    files.sort();
    let mut code = String::from(
        "/// The apps' operations as built: (path under `client-tests/operations`, text).\n\
         pub const APP_OPERATIONS: &[(&str, &str)] = &[\n",
    );
    for path in &files {
        let relative = path
            .strip_prefix(operations.canonicalize().expect("the operations folder"))
            .expect("under the operations folder");
        code.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            relative.display().to_string(),
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("app_operations.rs");
    std::fs::write(out, code).expect("writing app_operations.rs");
}
