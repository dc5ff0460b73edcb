//! The committed schema files are what the code gives: each subgraph's SDL as the subgraph
//! exports it, and the supergraph as composition makes it from them. A change to a subgraph's
//! schema fails here until `gospelib schema export` and `gospelib schema compose` are run and
//! their output committed.

use std::path::Path;
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_gospelib");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn run(args: &[&str]) {
    let output = Command::new(BINARY).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "gospelib {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_committed_subgraph_sdls_and_supergraph_match_the_code() {
    let scratch = root()
        .join("target")
        .join(format!("schema-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let subgraphs = scratch.join("subgraphs");
    let supergraph = scratch.join("supergraph.graphql");
    run(&["schema", "export", "--dir", subgraphs.to_str().unwrap()]);
    run(&["schema", "compose", "--out", supergraph.to_str().unwrap()]);

    let committed = root().join("schema");
    for entry in std::fs::read_dir(&subgraphs).unwrap() {
        let name = entry.unwrap().file_name();
        let made = std::fs::read_to_string(subgraphs.join(&name)).unwrap();
        let kept =
            std::fs::read_to_string(committed.join("subgraphs").join(&name)).unwrap_or_else(|_| {
                panic!("schema/subgraphs/{name:?} is not committed: run gospelib schema export")
            });
        assert!(
            made == kept,
            "schema/subgraphs/{name:?} differs from the code: run gospelib schema export"
        );
    }
    let made = std::fs::read_to_string(&supergraph).unwrap();
    let kept = std::fs::read_to_string(committed.join("supergraph.graphql")).unwrap();
    assert!(
        made == kept,
        "schema/supergraph.graphql differs: run gospelib schema compose"
    );
    assert!(kept.contains(
        "@join__graph(name: \"content\", url: \"http://127.0.0.1:4001/subgraphs/content/graphql\")"
    ));
    std::fs::remove_dir_all(&scratch).unwrap();
}
