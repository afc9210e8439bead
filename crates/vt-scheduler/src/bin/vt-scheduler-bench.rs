//! Places 10,000 instances onto 1,000 nodes and checks the invariants.
//!
//! `cargo run --release -p vt-scheduler --bin vt-scheduler-bench -- [--instances N] [--nodes M]`

use std::collections::BTreeMap;
use std::time::Instant;

use vt_scheduler::{check, counter, plan, Config, Group, Input, Node, NodeStatus, Resources};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let instances = arg("--instances", 10_000);
    let nodes = arg("--nodes", 1_000);
    // Mixed node sizes; 1,000 groups of mixed sizes and replica counts.
    let input = Input {
        nodes: (0..nodes)
            .map(|i| Node {
                id: format!("node_{i:05}"),
                name: format!("node-{i:05}"),
                status: if i % 97 == 0 { NodeStatus::Draining } else { NodeStatus::Ready },
                allocatable: Resources {
                    cpu_millis: 8_000 * (1 + (i % 4) as u64),
                    memory_mib: 16_384 * (1 + (i % 4) as u64),
                },
            })
            .collect(),
        instances: vec![],
        groups: {
            let per = 10;
            (0..instances.div_ceil(per))
                .map(|g| Group {
                    env: format!("env_{:04}", g / 4),
                    process: format!("p{}", g % 4),
                    replicas: per.min(instances - g * per) as u32,
                    release: "rel_1".into(),
                    resources: Resources {
                        cpu_millis: 250 * (1 + (g % 4) as u64),
                        memory_mib: 256 * (1 + (g % 8) as u64),
                    },
                    volumes: vec![],
                    suspend: false,
                })
                .collect()
        },
        volumes: vec![],
        now: 0,
    };
    let config = Config::default();
    let start = Instant::now();
    let p = plan(&input, &config, &mut counter("inst_"));
    let elapsed = start.elapsed();
    if let Err(e) = check(&input, &config, &p) {
        eprintln!("invariant violated: {e}");
        std::process::exit(1);
    }
    // Spread: replicas of one group differ by at most one across the nodes they use,
    // and no group has two replicas on a node while a ready node has none of it (capacity allows here).
    let mut per_group: BTreeMap<(&str, &str), BTreeMap<&str, u32>> = BTreeMap::new();
    for a in &p.allocations {
        *per_group.entry((&a.env, &a.process)).or_default().entry(&a.node).or_default() += 1;
    }
    let worst = per_group.values().map(|m| *m.values().max().unwrap_or(&0)).max().unwrap_or(0);
    if worst > 1 || !p.unplaceable.is_empty() || p.allocations.len() != instances {
        eprintln!(
            "placement incomplete or unspread: {} placed, {} unplaceable, max {worst} replicas of a group on a node",
            p.allocations.len(),
            p.unplaceable.len()
        );
        std::process::exit(1);
    }
    println!(
        "placed {} instances onto {} nodes in {:.1} ms; invariants hold (memory cap, CPU {}x, ready nodes only, spread <= 1 per node)",
        p.allocations.len(),
        nodes,
        elapsed.as_secs_f64() * 1000.0,
        config.cpu_oversubscription
    );
}
