//! Hostile documents the tests and the `hostile` benchmark share.

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
