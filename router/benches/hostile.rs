//! How long the router takes to refuse (or plan) hostile documents, before anything reaches a
//! subgraph: the doubling-fragment attack at 10–40 fragments on the platform's supergraph
//! (`Passage.next`/`previous`), a deep nesting and a wide alias list, with the default limits.
//! Prints the median of several runs per document; the time must stay in the low milliseconds
//! and grow linearly with the document.
//!
//! `cargo bench -p gospelib-router --bench hostile`

use std::time::{Duration, Instant};

use gospelib_router::planning::PlanCache;

#[path = "../tests/support/attacks.rs"]
mod attacks;
use attacks::{doubling_fragments, platform_supergraph};
use gospelib_router::supergraph::Supergraph;

const RUNS: usize = 7;

fn deep_nesting(levels: usize) -> String {
    let mut query = String::from("{ passage(id: \"gen.1.1\") { ");
    query.push_str(&"next { ".repeat(levels));
    query.push_str("id");
    query.push_str(&" }".repeat(levels + 2));
    query
}

fn wide_aliases(count: usize) -> String {
    let aliases: String = (0..count).map(|i| format!("a{i}: id ")).collect();
    format!("{{ passage(id: \"gen.1.1\") {{ {aliases} }} }}")
}

fn repeated_field(count: usize) -> String {
    format!(
        "{{ passage(id: \"gen.1.1\") {{ {} }} }}",
        "text ".repeat(count)
    )
}

fn repeated_spread(count: usize) -> String {
    format!(
        "{{ passage(id: \"gen.1.1\") {{ {} }} }} fragment T on Passage {{ text }}",
        "...T ".repeat(count)
    )
}

fn distinct_spreads(count: usize) -> String {
    let spreads: String = (0..count).map(|n| format!("...F{n} ")).collect();
    let fragments: String = (0..count)
        .map(|n| format!(" fragment F{n} on Passage {{ id }}"))
        .collect();
    format!("{{ passage(id: \"gen.1.1\") {{ {spreads} }} }}{fragments}")
}

fn measure(supergraph: &Supergraph, name: &str, query: &str) {
    let mut times = Vec::with_capacity(RUNS);
    let mut outcome = String::new();
    for _ in 0..RUNS {
        // A fresh cache each run: nothing is answered from a previous one.
        let cache = PlanCache::new(16);
        let started = Instant::now();
        let result = cache.plan(supergraph, query, None);
        times.push(started.elapsed());
        outcome = match result {
            Ok(_) => "planned".to_owned(),
            Err(error) => error.to_string(),
        };
    }
    times.sort();
    let median: Duration = times[RUNS / 2];
    println!(
        "{name:<28} {:>7} bytes  {:>9.3} ms  {}",
        query.len(),
        median.as_secs_f64() * 1000.0,
        outcome.chars().take(90).collect::<String>()
    );
}

fn main() {
    let supergraph = platform_supergraph();
    println!("document                        size      median  outcome (default limits)");
    for count in [8, 9, 10, 12, 14, 16, 20, 26, 30, 35, 40] {
        measure(
            &supergraph,
            &format!("doubling fragments × {count}"),
            &doubling_fragments(count),
        );
    }
    measure(&supergraph, "nesting × 14", &deep_nesting(13));
    measure(&supergraph, "nesting × 2000", &deep_nesting(2000));
    measure(&supergraph, "aliases × 30", &wide_aliases(30));
    measure(&supergraph, "aliases × 3000", &wide_aliases(3000));
    for count in [32, 200, 1600] {
        measure(
            &supergraph,
            &format!("distinct spreads × {count}"),
            &distinct_spreads(count),
        );
    }
    for count in [1000, 2000, 4000] {
        measure(
            &supergraph,
            &format!("same field × {count}"),
            &repeated_field(count),
        );
        measure(
            &supergraph,
            &format!("same spread × {count}"),
            &repeated_spread(count),
        );
    }
}
