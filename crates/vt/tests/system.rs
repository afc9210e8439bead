//! `vt system boot-timings` against a real server: a simulated node agent registers, the
//! scheduler places a deploy's instances on it, and each reports `running` with its boot
//! timings as the agent does; the CLI shows the per-phase percentiles.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, DIGEST_IMAGE};
use serde_json::json;
use vt_client::vt_api::{RegisterNode, ReportInstanceStatus};

const MANIFEST: &str = "schema_version = 1\n\n[processes.web]\ncommand = [\"/bin/true\"]\nresources = { cpu = 0.5, memory_mib = 128 }\nscaling = { min = 3, max = 3 }\n";

/// Node `node-1`, a deploy of three `web` instances placed on it, each reporting `running`
/// with boot timings (the third without a root disk time).
fn three_booted_instances(s: &TestServer) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = vt_client::Client::new(&s.url, Some(s.token.clone()));
    rt.block_on(async {
        let node: RegisterNode =
            serde_json::from_value(json!({"name": "node-1", "capacity": {"cpu_millis": 4000, "memory_mib": 4096}}))
                .unwrap();
        client.node_register(&node, "register-node-1").await.unwrap();
    });
    let manifest = s.dir.path().join("boot.toml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let r = s.run(&["deploy", "--image", DIGEST_IMAGE, "--manifest", manifest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.text);
    rt.block_on(async {
        let started = Instant::now();
        let mut items = loop {
            let items = client.instance_list("acme", "web", "prod").await.unwrap().items;
            if items.len() == 3 {
                break items;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the scheduler placed {} of 3 instances", items.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        items.sort_by_key(|i| i.id);
        let timings = [
            json!({"root_disk_ms": 1375, "vmm_spawned_ms": 25, "kernel_to_init_ms": 1402, "init_to_entrypoint_ms": 358, "running_ms": 4213, "healthy_ms": 4213}),
            json!({"root_disk_ms": 12, "vmm_spawned_ms": 21, "kernel_to_init_ms": 1510, "init_to_entrypoint_ms": 341, "running_ms": 2890}),
            json!({"vmm_spawned_ms": 30, "kernel_to_init_ms": 1388, "init_to_entrypoint_ms": 402, "running_ms": 2702}),
        ];
        for (i, boot) in items.iter().zip(timings) {
            let report: ReportInstanceStatus = serde_json::from_value(json!({"status": "running", "boot": boot})).unwrap();
            client.instance_report_status(&i.id.to_string(), &report, &format!("report-{}", i.id)).await.unwrap();
        }
    });
}

#[test]
fn boot_timings_table_json_and_node_filter() {
    let s = TestServer::start();
    s.seed();
    snap!("boot_timings_empty", s.run(&["system", "boot-timings"]));
    three_booted_instances(&s);
    snap!("boot_timings", s.run(&["system", "boot-timings"]));
    snap!("boot_timings_node_json", s.run(&["system", "boot-timings", "--node", "node-1", "-o", "json"]));
    snap!("boot_timings_unknown_node", s.run(&["system", "boot-timings", "--node", "node-9"]));
}

#[test]
fn gc_collects_the_registry_and_says_what_it_did() {
    let s = TestServer::start();
    snap!("system_gc", s.run(&["system", "gc"]));
    let r = s.run(&["system", "gc", "-o", "json"]).json();
    assert_eq!((r["blobs_removed"].as_u64(), r["uploads_expired"].as_u64()), (Some(0), Some(0)), "{r}");
    let tasks = s.run(&["system", "tasks", "-o", "json"]).json();
    let gc = tasks["items"].as_array().unwrap().iter().find(|t| t["name"] == "registry-gc").cloned().unwrap();
    assert_eq!((gc["state"].as_str(), gc["activations"].as_u64()), (Some("running"), Some(2)), "{gc}");
}
