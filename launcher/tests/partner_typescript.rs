//! A partner's TypeScript integration, built the way partners build one, against the platform
//! started here (`support/platform.rs`: the router over every subgraph, content on the fixture
//! corpus) with an API key made by `gospelib partner-key create`:
//! 1. `client-tests/partner-ts/install.sh`: Node.js and npm (Debian's, if missing) and the
//!    exact tool versions of `package-lock.json` (`npm ci`, once);
//! 2. `node introspect.mjs`: the partner contract introspected through the router with the
//!    key, built into a client schema by graphql-js (`buildClientSchema`);
//! 3. `node validate.mjs`: every `client-tests/operations/partner/*.graphql` (and its
//!    variables) validated against that schema — and an operation reaching outside the
//!    contract refused by the same check;
//! 4. GraphQL Code Generator (`typescript-operations`): the operations' types;
//! 5. `tsc --noEmit --strict`: the generated types and the partner code using them
//!    (`src/partner-client.ts`).
//!
//! Each step's output is shown when it fails.

#[path = "support/platform.rs"]
mod platform;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn partner_ts() -> PathBuf {
    platform::repository().join("client-tests/partner-ts")
}

/// The PATH the steps run with: first the Node.js 20 `scripts/toolchain.sh` installs when the
/// machine's is older (Debian 12's is 18), once `install.sh` made it; else this process's.
fn steps_path() -> Option<String> {
    let installed = platform::repository().join(".stack/tools/node20/node_modules/node/bin");
    installed.is_dir().then(|| {
        let inherited = std::env::var("PATH").unwrap_or_default();
        format!("{}:{inherited}", installed.display())
    })
}

/// Runs `program args` in `client-tests/partner-ts` with `env`; its output when it succeeds.
fn step(what: &str, program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = steps_path();
    // (A program named without a path is looked for on the PATH given here.)
    let mut command = Command::new(program);
    if let Some(path) = &path {
        command.env("PATH", path);
    }
    command.args(args).current_dir(partner_ts());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: cannot run {program}: {error}"));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{shown}",
        output.status
    );
    eprintln!("{what}: ok\n{}", shown.trim_end());
    shown
}

/// A tool of `node_modules/.bin`.
fn tool(name: &str) -> String {
    partner_ts()
        .join("node_modules/.bin")
        .join(name)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_builds_a_typed_client_from_the_introspected_contract() {
    let platform = platform::start("client_partner_ts").await;
    let key = tokio::task::spawn_blocking(|| {
        let made = support::gospelib(
            &[
                "partner-key",
                "create",
                "--partner",
                &format!("partner-ts-{}", uuid::Uuid::new_v4().simple()),
                "--format",
                "json",
            ],
            &support::stack_vars(),
        )
        .output()
        .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        serde_json::from_slice::<Value>(&made.stdout).unwrap()
    })
    .await
    .unwrap();
    let url = format!("{}/graphql", platform.base);
    let api_key = key["key"].as_str().unwrap().to_owned();
    let key_id = key["id"].as_str().unwrap().to_owned();

    tokio::task::spawn_blocking(move || {
        step("install", "bash", &["install.sh"], &[]);
        // Nothing left from an earlier run can stand in for this one's output.
        let generated = partner_ts().join("generated");
        let _ = std::fs::remove_dir_all(&generated);

        step(
            "introspect",
            "node",
            &["introspect.mjs"],
            &[
                ("GOSPELIB_PARTNER_URL", url.as_str()),
                ("GOSPELIB_PARTNER_KEY", api_key.as_str()),
            ],
        );
        // The contract, not the whole API: what only the apps may use is not in it.
        let introspected: Value = serde_json::from_str(
            &std::fs::read_to_string(generated.join("partner.introspection.json")).unwrap(),
        )
        .unwrap();
        let schema = &introspected["data"]["__schema"];
        assert_eq!(schema["mutationType"], Value::Null, "{schema}");
        let fields = |type_name: &str| -> Vec<String> {
            schema["types"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == type_name)
                .unwrap_or_else(|| panic!("no type {type_name} in the partner contract"))["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            fields("Query"),
            ["passage", "passages", "chapter", "book", "books", "search"]
        );
        let passage = fields("Passage");
        for hidden in ["words", "topics", "myHighlights", "myNotes"] {
            assert!(
                !passage.iter().any(|f| f == hidden),
                "Passage.{hidden} in the partner contract: {passage:?}"
            );
        }

        step("validate", "node", &["validate.mjs"], &[]);
        // The same check refuses an operation reaching outside the contract.
        let outside = std::env::temp_dir().join(format!(
            "gospelib-partner-ops-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(
            outside.join("Lexicon.graphql"),
            "query Lexicon { lexiconEntry(id: \"G0025\") { lemma } }\n",
        )
        .unwrap();
        let refused = Command::new("node")
            .args(["validate.mjs", &outside.display().to_string()])
            .current_dir(partner_ts())
            .output()
            .unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && said.contains("Cannot query field \"lexiconEntry\""),
            "an operation outside the contract passed validation: {said}"
        );

        step(
            "codegen",
            &tool("graphql-codegen"),
            &["--config", "codegen.yml"],
            &[],
        );
        let generated_types = std::fs::read_to_string(generated.join("operations.ts")).unwrap();
        for name in operation_names(&platform::repository().join("client-tests/operations/partner"))
        {
            assert!(
                generated_types.contains(&format!("export type {name}Query = "))
                    && generated_types.contains(&format!("export type {name}QueryVariables = ")),
                "no types for {name}:\n{generated_types}"
            );
        }
        step(
            "typecheck",
            &tool("tsc"),
            &["--noEmit", "--strict", "-p", "tsconfig.json"],
            &[],
        );
    })
    .await
    .unwrap();

    tokio::task::spawn_blocking(move || {
        let revoked =
            support::gospelib(&["partner-key", "revoke", &key_id], &support::stack_vars())
                .output()
                .unwrap();
        assert!(revoked.status.success());
    })
    .await
    .unwrap();
}

/// The operation names of a folder's `*.graphql` files (their stems).
fn operation_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "graphql"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    names
}
