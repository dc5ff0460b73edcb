//! The Phase 2 topology, run for real in the test command: `scripts/topology test` starts every
//! part as its own process on loopback (the routers twice, content twice, a FalkorDB replica, a
//! 3-node Typesense cluster), drives a steady, checked load through both routers while it kills
//! and restarts one content process, one Typesense node and the FalkorDB replica and publishes a
//! new supergraph version, and ends with `topology: N requests, F failed, R retried, lost L`.
//! Nothing may be lost, and the routers must never stop.
//!
//! The script builds the binaries it runs (`cargo build -p gospelib -p gospelib-router`, debug:
//! the feature set `scripts/test` already built, so only the binaries are linked). Ports come
//! from `GOSPELIB_TOPOLOGY_*` (see the script); one that is taken fails the test, naming the
//! variable to change.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the launcher is a workspace member")
        .to_path_buf()
}

#[test]
fn the_phase_2_topology_loses_nothing_while_parts_of_it_die_and_come_back() {
    let started = std::time::Instant::now();
    let output = Command::new(repository().join("scripts/topology"))
        .arg("test")
        .current_dir(repository())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/topology runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        output.status.success(),
        "scripts/topology test failed ({}); its last line: {last:?}",
        output.status
    );
    let numbers: Vec<u64> = last
        .strip_prefix("topology: ")
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .filter(|part| !part.is_empty())
                .map(|part| part.parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    let shape = format!(
        "topology: {} requests, {} failed, {} retried, lost {}",
        numbers.first().unwrap_or(&0),
        numbers.get(1).unwrap_or(&0),
        numbers.get(2).unwrap_or(&0),
        numbers.get(3).unwrap_or(&0)
    );
    assert_eq!(last, shape, "the last line is the report");
    assert!(numbers[0] > 0, "requests were sent: {last}");
    assert_eq!(numbers[3], 0, "nothing lost: {last}");
    eprintln!("scripts/topology test took {:?}", started.elapsed());
}
