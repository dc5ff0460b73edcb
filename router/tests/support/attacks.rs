//! Hostile documents the tests and the `hostile` benchmark share, and the supergraph they are
//! aimed at.

use gospelib_router::supergraph::Supergraph;

/// The committed supergraph of the platform (content's `Passage.next`/`previous` recurse).
pub fn platform_supergraph() -> Supergraph {
    let sdl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/supergraph.graphql"
    ))
    .unwrap();
    Supergraph::parse(&sdl, None).unwrap()
}

/// `fragment F0 on Passage { next { ...F1 } previous { ...F1 } } … fragment F<n> { id }` on the
/// platform's supergraph: each fragment doubles the work of a walk that expands spreads.
pub fn doubling_fragments(count: usize) -> String {
    let mut query = String::from("{ passage(id: \"gen.1.1\") { ...F0 } }\n");
    for i in 0..count {
        query.push_str(&format!(
            "fragment F{i} on Passage {{ next {{ ...F{n} }} previous {{ ...F{n} }} }}\n",
            n = i + 1
        ));
    }
    query.push_str(&format!("fragment F{count} on Passage {{ id }}\n"));
    query
}
