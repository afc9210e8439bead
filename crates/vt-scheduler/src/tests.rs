use proptest::prelude::*;

use super::*;

fn node(name: &str, status: NodeStatus, cpu: u64, mem: u64) -> Node {
    Node {
        id: format!("id-{name}"),
        name: name.into(),
        status,
        allocatable: Resources { cpu_millis: cpu, memory_mib: mem },
    }
}

fn ready(name: &str, mem: u64) -> Node {
    node(name, NodeStatus::Ready, 4000, mem)
}

fn res(mem: u64) -> Resources {
    Resources { cpu_millis: 1000, memory_mib: mem }
}

fn group(process: &str, replicas: u32, release: &str, mem: u64) -> Group {
    Group {
        env: "env".into(),
        process: process.into(),
        replicas,
        release: release.into(),
        resources: res(mem),
        volumes: vec![],
        suspend: false,
    }
}

fn inst(id: &str, node: &str, process: &str, release: &str, mem: u64, order: u64) -> Instance {
    Instance {
        id: id.into(),
        node: format!("id-{node}"),
        env: "env".into(),
        process: process.into(),
        release: release.into(),
        resources: res(mem),
        desired: Desired::Running,
        status: Status::Ready,
        ready_since: Some(0),
        failure: None,
        order,
    }
}

/// An instance of `env/web` on node `a` of `release`, in `status`.
fn web(id: &str, release: &str, status: Status, order: u64) -> Instance {
    let ready_since = (status == Status::Ready).then_some(0);
    Instance { status, ready_since, ..inst(id, "a", "web", release, 256, order) }
}

/// An instance of `env/web` (release r1) that failed at `at` after being ready since `ready_since`.
fn failed(id: &str, release: &str, at: Millis, ready_since: Option<Millis>, reason: &str) -> Instance {
    Instance {
        status: Status::Exited,
        ready_since,
        failure: Some(Failure { at, reason: reason.into() }),
        ..inst(id, "a", "web", release, 256, at)
    }
}

fn run(input: &Input) -> Plan {
    let config = Config::default();
    let p = plan(input, &config, &mut counter("new"));
    check(input, &config, &p).unwrap();
    p
}

/// Node names of the allocations, in order.
fn placed(p: &Plan) -> Vec<String> {
    p.allocations.iter().map(|a| a.node.trim_start_matches("id-").to_owned()).collect()
}

fn stopped(p: &Plan) -> Vec<(&str, &str)> {
    p.stops.iter().map(|s| (s.instance.as_str(), s.reason.as_str())).collect()
}

#[test]
fn table_of_placements() {
    struct Case {
        name: &'static str,
        input: Input,
        placed: Vec<&'static str>,
        stopped: Vec<&'static str>,
        unplaceable: Vec<&'static str>,
    }
    let cases = vec![
        Case {
            name: "spread over two nodes, most free memory first",
            input: Input { nodes: vec![ready("a", 1024), ready("b", 2048)], instances: vec![], groups: vec![group("web", 3, "r1", 256)], volumes: vec![], now: 0 },
            placed: vec!["b", "a", "b"],
            stopped: vec![],
            unplaceable: vec![],
        },
        Case {
            name: "equal nodes: by name",
            input: Input { nodes: vec![ready("b", 1024), ready("a", 1024)], instances: vec![], groups: vec![group("web", 2, "r1", 256)], volumes: vec![], now: 0 },
            placed: vec!["a", "b"],
            stopped: vec![],
            unplaceable: vec![],
        },
        Case {
            name: "only ready nodes receive",
            input: Input {
                nodes: vec![node("a", NodeStatus::Draining, 4000, 4096), node("b", NodeStatus::Unreachable, 4000, 4096), ready("c", 1024)],
                instances: vec![],
                groups: vec![group("web", 2, "r1", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec!["c", "c"],
            stopped: vec![],
            unplaceable: vec![],
        },
        Case {
            name: "existing replicas count for spread",
            input: Input {
                nodes: vec![ready("a", 4096), ready("b", 4096)],
                instances: vec![inst("i1", "a", "web", "r1", 256, 1)],
                groups: vec![group("web", 2, "r1", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec!["b"],
            stopped: vec![],
            unplaceable: vec![],
        },
        Case {
            name: "memory is a hard cap",
            input: Input { nodes: vec![ready("a", 600)], instances: vec![], groups: vec![group("web", 3, "r1", 256)], volumes: vec![], now: 0 },
            placed: vec!["a", "a"],
            stopped: vec![],
            unplaceable: vec!["env/web 2 of 3 instance(s) placed: needs 256 MiB memory; largest free is 88 MiB on a"],
        },
        Case {
            name: "cpu oversubscribed 4x",
            input: Input {
                nodes: vec![node("a", NodeStatus::Ready, 1000, 65536)],
                instances: vec![],
                groups: vec![Group { env: "env".into(), process: "web".into(), replicas: 5, release: "r1".into(), resources: res(1), volumes: vec![], suspend: false }],
                volumes: vec![],
                now: 0,
            },
            placed: vec!["a", "a", "a", "a"],
            stopped: vec![],
            unplaceable: vec!["env/web 4 of 5 instance(s) placed: needs 1000 CPU millis; most free is 0 on a"],
        },
        Case {
            name: "unreachable node's instances are replaced",
            input: Input {
                nodes: vec![node("a", NodeStatus::Unreachable, 4000, 4096), ready("b", 4096)],
                instances: vec![inst("i1", "a", "web", "r1", 256, 1), inst("i2", "b", "web", "r1", 256, 2)],
                groups: vec![group("web", 2, "r1", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec!["b"],
            stopped: vec!["i1: node a is unreachable; replaced elsewhere"],
            unplaceable: vec![],
        },
        Case {
            name: "scale down stops newest first",
            input: Input {
                nodes: vec![ready("a", 4096)],
                instances: vec![inst("i1", "a", "web", "r1", 256, 3), inst("i2", "a", "web", "r1", 256, 1), inst("i3", "a", "web", "r1", 256, 2)],
                groups: vec![group("web", 1, "r1", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec![],
            stopped: vec!["i1: scaled down to 1", "i3: scaled down to 1"],
            unplaceable: vec![],
        },
        Case {
            name: "undesired process and scale to 0",
            input: Input {
                nodes: vec![ready("a", 4096)],
                instances: vec![inst("i1", "a", "worker", "r1", 256, 1), inst("i2", "a", "web", "r1", 256, 2)],
                groups: vec![group("web", 0, "r1", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec![],
            stopped: vec!["i1: process `worker` is not desired in this env", "i2: scaled to 0"],
            unplaceable: vec![],
        },
        Case {
            name: "release change starts new, keeps old until new run",
            input: Input {
                nodes: vec![ready("a", 4096), ready("b", 4096)],
                instances: vec![inst("i1", "a", "web", "r1", 256, 1), inst("i2", "b", "web", "r1", 256, 2)],
                groups: vec![group("web", 2, "r2", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec!["a", "b"],
            stopped: vec![],
            unplaceable: vec![],
        },
        Case {
            name: "release change: one new is ready, one old stops (newest)",
            input: Input {
                nodes: vec![ready("a", 4096), ready("b", 4096)],
                instances: vec![
                    inst("i1", "a", "web", "r1", 256, 1),
                    inst("i2", "b", "web", "r1", 256, 2),
                    inst("i3", "a", "web", "r2", 256, 3),
                    Instance { status: Status::Starting, ..inst("i4", "b", "web", "r2", 256, 4) },
                ],
                groups: vec![group("web", 2, "r2", 256)],
                volumes: vec![], now: 0,
            },
            placed: vec![],
            stopped: vec!["i2: replaced by release r2"],
            unplaceable: vec![],
        },
        Case {
            name: "hint names what to stop",
            input: Input {
                nodes: vec![ready("a", 1024), ready("b", 1024)],
                instances: vec![
                    Instance { env: "other".into(), ..inst("x1", "a", "db", "q", 768, 1) },
                    Instance { env: "other".into(), ..inst("x2", "b", "db", "q", 512, 2) },
                    Instance { env: "other".into(), ..inst("x3", "b", "cache", "q", 256, 3) },
                ],
                groups: vec![
                    group("web", 1, "r1", 768),
                    Group { env: "other".into(), process: "db".into(), replicas: 2, release: "q".into(), resources: res(768), volumes: vec![], suspend: false },
                    Group { env: "other".into(), process: "cache".into(), replicas: 1, release: "q".into(), resources: res(256), volumes: vec![], suspend: false },
                ],
                volumes: vec![],
                now: 0,
            },
            placed: vec![],
            stopped: vec![],
            unplaceable: vec!["env/web 0 of 1 instance(s) placed: needs 768 MiB memory; largest free is 256 MiB on a (2 ready node(s)); stopping 1 instance(s) on a would make room: x1 (other/db, 768 MiB)"],
        },
    ];
    for c in cases {
        let p = run(&c.input);
        assert_eq!(placed(&p), c.placed, "{}", c.name);
        let stops: Vec<String> = stopped(&p).iter().map(|(i, r)| format!("{i}: {r}")).collect();
        assert_eq!(stops, c.stopped, "{}", c.name);
        let un: Vec<String> = p.unplaceable.iter().map(|u| format!("{}/{} {u}", u.env, u.process)).collect();
        assert_eq!(un.len(), c.unplaceable.len(), "{}: {un:?}", c.name);
        for (got, want) in un.iter().zip(&c.unplaceable) {
            assert!(got.starts_with(want), "{}: {got:?} does not start with {want:?}", c.name);
        }
    }
}

#[test]
fn new_ids_come_from_the_generator_in_order() {
    let input = Input {
        nodes: vec![ready("a", 4096)],
        instances: vec![],
        groups: vec![group("b", 1, "r", 1), group("a", 2, "r", 1)],
        volumes: vec![],
        now: 0,
    };
    let p = run(&input);
    let got: Vec<(&str, &str)> = p.allocations.iter().map(|a| (a.id.as_str(), a.process.as_str())).collect();
    assert_eq!(got, vec![("new000000", "a"), ("new000001", "a"), ("new000002", "b")]);
}

#[test]
fn surge_limit_holds_back_new_instances() {
    let input = Input {
        nodes: vec![ready("a", 4096)],
        instances: vec![inst("i1", "a", "web", "r1", 256, 1), inst("i2", "a", "web", "r1", 256, 2)],
        groups: vec![group("web", 2, "r2", 256)],
        volumes: vec![],
        now: 0,
    };
    let config = Config { rollout: Rollout { max_surge: Some(1), max_unavailable: 1 }, ..Config::default() };
    let p = plan(&input, &config, &mut counter("n"));
    // One old may go before its replacement runs; one new may be added above the count.
    assert_eq!(stopped(&p), vec![("i2", "replaced by release r2")]);
    assert_eq!(p.allocations.len(), 2);
}

#[test]
fn rollouts_count_ready_instances_only() {
    struct Case {
        name: &'static str,
        new: Vec<Status>,
        max_unavailable: u32,
        stopped: Vec<&'static str>,
        placed: usize,
    }
    use Status::*;
    let cases = vec![
        Case {
            name: "new instances starting: old ones stay",
            new: vec![Starting, Starting],
            max_unavailable: 0,
            stopped: vec![],
            placed: 0,
        },
        Case {
            name: "running but health pending: old ones stay",
            new: vec![Running, Running],
            max_unavailable: 0,
            stopped: vec![],
            placed: 0,
        },
        Case {
            name: "one ready: the newest old stops",
            new: vec![Ready, Running],
            max_unavailable: 0,
            stopped: vec!["o2: replaced by release r2"],
            placed: 0,
        },
        Case {
            name: "both ready: both old stop",
            new: vec![Ready, Ready],
            max_unavailable: 0,
            stopped: vec!["o1: replaced by release r2", "o2: replaced by release r2"],
            placed: 0,
        },
        Case {
            name: "max_unavailable lets one go before any is ready",
            new: vec![Running, Starting],
            max_unavailable: 1,
            stopped: vec!["o2: replaced by release r2"],
            placed: 0,
        },
        Case {
            name: "a failing new one is stopped and replaced; it does not count",
            new: vec![Failing, Ready],
            max_unavailable: 0,
            stopped: vec!["n1: health check failing: health check failed 3 times", "o2: replaced by release r2"],
            placed: 1,
        },
    ];
    for c in cases {
        let mut instances = vec![web("o1", "r1", Ready, 1), web("o2", "r1", Ready, 2)];
        for (k, status) in c.new.iter().enumerate() {
            let mut i = web(&format!("n{}", k + 1), "r2", *status, 10 + k as u64);
            if *status == Failing {
                i.failure = Some(Failure { at: 5_000, reason: "health check failed 3 times".into() });
            }
            instances.push(i);
        }
        let input = Input {
            nodes: vec![ready("a", 1 << 20)],
            instances,
            groups: vec![group("web", 2, "r2", 256)],
            volumes: vec![],
            now: 600_000,
        };
        let config =
            Config { rollout: Rollout { max_surge: None, max_unavailable: c.max_unavailable }, ..Config::default() };
        let p = plan(&input, &config, &mut counter("new"));
        check(&input, &config, &p).unwrap();
        let stops: Vec<String> = stopped(&p).iter().map(|(i, r)| format!("{i}: {r}")).collect();
        assert_eq!(stops, c.stopped, "{}", c.name);
        assert_eq!(p.allocations.len(), c.placed, "{}", c.name);
    }
}

#[test]
fn backoff_doubles_from_one_second_up_to_five_minutes() {
    let b = Backoff::default();
    let got: Vec<(u32, Millis)> =
        [0, 1, 2, 3, 4, 9, 10, 63, 64, 65, u32::MAX].iter().map(|&n| (n, b.delay(n))).collect();
    assert_eq!(
        got,
        vec![
            (0, 0),
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (9, 256_000),
            (10, 300_000),
            (63, 300_000),
            (64, 300_000),
            (65, 300_000),
            (u32::MAX, 300_000)
        ]
    );
}

#[test]
fn crash_loops_delay_replacements() {
    struct Case {
        name: &'static str,
        history: Vec<Instance>,
        now: Millis,
        /// (failures, last reason, restart_at, held), if a crash loop.
        crash_loop: Option<(u32, &'static str, Millis, u32)>,
        placed: usize,
        stopped: Vec<&'static str>,
    }
    let exited = "exited with code 1";
    let cases = vec![
        Case {
            name: "no failure: replaced at once",
            history: vec![],
            now: 0,
            crash_loop: None,
            placed: 1,
            stopped: vec![],
        },
        Case {
            name: "first failure: 1 s",
            history: vec![failed("f1", "r1", 10_000, None, exited)],
            now: 10_500,
            crash_loop: Some((1, exited, 11_000, 1)),
            placed: 0,
            stopped: vec![],
        },
        Case {
            name: "first failure, 1 s later: replaced",
            history: vec![failed("f1", "r1", 10_000, None, exited)],
            now: 11_000,
            crash_loop: Some((1, exited, 11_000, 0)),
            placed: 1,
            stopped: vec![],
        },
        Case {
            name: "four failures: 8 s after the last",
            history: vec![
                failed("f1", "r1", 1_000, None, "exited with code 2"),
                failed("f2", "r1", 5_000, Some(4_000), "exited with code 2"),
                failed("f3", "r1", 9_000, None, "exited with code 2"),
                failed("f4", "r1", 20_000, Some(19_000), exited),
            ],
            now: 25_000,
            crash_loop: Some((4, exited, 28_000, 1)),
            placed: 0,
            stopped: vec![],
        },
        Case {
            name: "capped at 5 min",
            history: (0..20).map(|k| failed(&format!("f{k:02}"), "r1", 1_000 * k, None, exited)).collect(),
            now: 100_000,
            crash_loop: Some((20, exited, 319_000, 1)),
            placed: 0,
            stopped: vec![],
        },
        Case {
            name: "an instance ready for 60 s resets the count",
            history: vec![
                failed("f1", "r1", 1_000, None, exited),
                failed("f2", "r1", 3_000, None, exited),
                web("ok", "r1", Status::Ready, 5),
            ],
            now: 70_000,
            // `ok` has been ready since 0: the release proved itself at 60 s, failures before are forgotten.
            crash_loop: None,
            placed: 1,
            stopped: vec![],
        },
        Case {
            name: "a failure after a long healthy run counts as the first",
            history: vec![
                failed("f1", "r1", 1_000, None, exited),
                failed("f2", "r1", 3_000, None, exited),
                failed("f3", "r1", 200_000, Some(100_000), "exited with code 3"),
            ],
            now: 200_500,
            crash_loop: Some((1, "exited with code 3", 201_000, 1)),
            placed: 0,
            stopped: vec![],
        },
        Case {
            name: "ready, but not for 60 s: no reset",
            history: vec![failed("f1", "r1", 1_000, None, exited), failed("f2", "r1", 50_000, Some(10_000), exited)],
            now: 50_100,
            crash_loop: Some((2, exited, 52_000, 1)),
            placed: 0,
            stopped: vec![],
        },
        Case {
            name: "failures of another release do not count",
            history: vec![failed("f1", "r0", 10_000, None, exited)],
            now: 10_100,
            crash_loop: None,
            placed: 1,
            stopped: vec![],
        },
        Case {
            name: "a failing health check: stopped, replaced after the backoff",
            history: vec![Instance {
                status: Status::Failing,
                ready_since: Some(1_000),
                failure: Some(Failure {
                    at: 9_000,
                    reason: "health check failed 3 times: GET /healthz on port 8080: connection refused".into(),
                }),
                ..web("h1", "r1", Status::Running, 1)
            }],
            now: 9_200,
            crash_loop: Some((
                1,
                "health check failed 3 times: GET /healthz on port 8080: connection refused",
                10_000,
                1,
            )),
            placed: 0,
            stopped: vec![
                "h1: health check failing: health check failed 3 times: GET /healthz on port 8080: connection refused",
            ],
        },
    ];
    for c in cases {
        // One replica to place, besides the live ones of the history.
        let live = c.history.iter().filter(|i| i.status == Status::Ready).count() as u32;
        let input = Input {
            nodes: vec![ready("a", 1 << 20)],
            instances: c.history.clone(),
            groups: vec![group("web", 1 + live, "r1", 256)],
            volumes: vec![],
            now: c.now,
        };
        let p = run(&input);
        let got = p.crash_loops.first().map(|cl| (cl.failures, cl.last.reason.as_str(), cl.restart_at, cl.held));
        assert_eq!(got, c.crash_loop, "{}", c.name);
        assert_eq!(p.allocations.len(), c.placed, "{}", c.name);
        let stops: Vec<String> = stopped(&p).iter().map(|(i, r)| format!("{i}: {r}")).collect();
        assert_eq!(stops, c.stopped, "{}", c.name);
        assert!(p.unplaceable.is_empty(), "{}: held back is not unplaceable", c.name);
    }
}

fn arb_input() -> impl Strategy<Value = Input> {
    let nodes = prop::collection::vec((1u64..8, 1u64..32, 0u8..6), 1..8);
    let groups = prop::collection::vec((0u32..12, 1u64..8, 1u64..4), 1..5);
    let instances = prop::collection::vec((0usize..8, 0usize..5, 1u64..8, 0u8..8, any::<bool>()), 0..24);
    (nodes, groups, instances).prop_map(|(nodes, groups, instances)| {
        let nodes: Vec<Node> = nodes
            .iter()
            .enumerate()
            .map(|(i, &(cpu, mem, s))| {
                let status = match s {
                    0 => NodeStatus::Unreachable,
                    1 => NodeStatus::Draining,
                    _ => NodeStatus::Ready,
                };
                node(&format!("n{i}"), status, cpu * 1000, mem * 128)
            })
            .collect();
        let groups: Vec<Group> = groups
            .iter()
            .enumerate()
            .map(|(i, &(replicas, mem, cpu))| Group {
                env: "env".into(),
                process: format!("p{i}"),
                replicas,
                release: "r2".into(),
                resources: Resources { cpu_millis: cpu * 250, memory_mib: mem * 64 },
                volumes: vec![],
                suspend: false,
            })
            .collect();
        let instances = instances
            .iter()
            .enumerate()
            .map(|(k, &(n, g, mem, s, old))| Instance {
                id: format!("i{k:03}"),
                node: nodes[n % nodes.len()].id.clone(),
                env: "env".into(),
                process: format!("p{g}"),
                release: if old { "r1".into() } else { "r2".into() },
                resources: Resources { cpu_millis: 250, memory_mib: mem * 64 },
                desired: if s == 7 { Desired::Stopped } else { Desired::Running },
                status: match s {
                    0 => Status::Starting,
                    1 => Status::Stopping,
                    2 => Status::Exited,
                    3 => Status::Running,
                    4 => Status::Failing,
                    _ => Status::Ready,
                },
                ready_since: (s > 4).then_some(k as u64 * 1000),
                failure: matches!(s, 2 | 4)
                    .then(|| Failure { at: k as u64 * 1000, reason: "exited with code 1".into() }),
                order: k as u64,
            })
            .collect();
        Input { nodes, instances, groups, volumes: vec![], now: 30_000 }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold(input in arb_input(), ratio in 1u32..6) {
        let config = Config { cpu_oversubscription: ratio as f64, ..Config::default() };
        let p = plan(&input, &config, &mut counter("n"));
        prop_assert_eq!(check(&input, &config, &p), Ok(()));
    }

    #[test]
    fn same_input_in_any_order_gives_the_same_plan(input in arb_input(), seed in any::<u64>()) {
        let config = Config::default();
        let p = plan(&input, &config, &mut counter("n"));
        let mut shuffled = input.clone();
        // A deterministic shuffle from the seed.
        let rot = |v: usize| if v == 0 { 0 } else { (seed as usize) % v };
        let k = rot(shuffled.nodes.len());
        shuffled.nodes.rotate_left(k);
        shuffled.instances.reverse();
        let k = rot(shuffled.instances.len());
        shuffled.instances.rotate_left(k);
        shuffled.groups.reverse();
        prop_assert_eq!(p, plan(&shuffled, &config, &mut counter("n")));
    }

    /// With room to spare on equal ready nodes, one group's replicas differ by at most one per node.
    #[test]
    fn spread_within_one(nodes in 1usize..12, replicas in 0u32..60) {
        let input = Input {
            nodes: (0..nodes).map(|i| node(&format!("n{i:02}"), NodeStatus::Ready, 1 << 20, 1 << 20)).collect(),
            instances: vec![],
            groups: vec![group("web", replicas, "r", 256)],
            volumes: vec![], now: 0,
        };
        let p = run(&input);
        prop_assert_eq!(p.allocations.len(), replicas as usize);
        let mut per: BTreeMap<&str, u32> = input.nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
        for a in &p.allocations {
            *per.get_mut(a.node.as_str()).unwrap() += 1;
        }
        let (min, max) = (per.values().min().unwrap(), per.values().max().unwrap());
        prop_assert!(max - min <= 1, "{:?}", per);
    }
}

fn vol(id: &str, node: &str, attached_to: Option<&str>) -> Volume {
    Volume {
        id: id.into(),
        env: "env".into(),
        name: "data".into(),
        node: format!("id-{node}"),
        attached_to: attached_to.map(Into::into),
    }
}

fn with_data(mut g: Group) -> Group {
    g.volumes = vec!["data".into()];
    g
}

#[test]
fn an_instance_with_a_volume_goes_where_a_free_volume_is_and_takes_it() {
    // Node a has more memory (spread would pick it); the only free volume is on b.
    let input = Input {
        nodes: vec![ready("a", 4096), ready("b", 1024)],
        groups: vec![with_data(group("web", 1, "r1", 256))],
        volumes: vec![vol("v1", "a", Some("gone")), vol("v2", "b", None)],
        instances: vec![Instance { status: Status::Ready, ..inst("i0", "a", "web", "r1", 256, 0) }],
        now: 0,
    };
    let mut i = input.clone();
    i.instances.clear();
    let p = run(&i);
    // v1 is held by an unknown instance: it is detached and taken (lowest id on the best node).
    assert_eq!(p.detaches, vec![Detach { volume: "v1".into(), instance: "gone".into() }]);
    assert_eq!(placed(&p), ["a"]);
    assert_eq!(p.allocations[0].volumes, vec![("data".to_owned(), "v1".to_owned())]);

    // v1 held by a live instance: the second replica goes to b, where v2 is.
    let mut i = input.clone();
    i.groups[0].replicas = 2;
    i.volumes[0].attached_to = Some("i0".into());
    let p = run(&i);
    assert!(p.detaches.is_empty());
    assert_eq!(placed(&p), ["b"]);
    assert_eq!(p.allocations[0].volumes, vec![("data".to_owned(), "v2".to_owned())]);

    // A third replica: no free volume anywhere, and the scheduler says so.
    i.groups[0].replicas = 3;
    i.volumes[1].attached_to = Some("i1".into());
    i.instances.push(Instance { status: Status::Ready, ..inst("i1", "b", "web", "r1", 256, 1) });
    let p = run(&i);
    assert!(p.allocations.is_empty());
    assert_eq!(p.unplaceable[0].reason, "process web needs a free volume `data`; 2 exist, both attached");
    assert!(p.unplaceable[0].hint.starts_with("held by i0, i1; or create one"), "{}", p.unplaceable[0].hint);

    // No volume of that name at all.
    let p = run(&Input { volumes: vec![], ..i.clone() });
    assert_eq!(p.unplaceable[0].reason, "process web needs a free volume `data`; none exists in its env");

    // The free volume is on a node that is not ready: nothing goes elsewhere.
    let mut i = input.clone();
    i.instances.clear();
    i.volumes = vec![vol("v2", "b", None)];
    i.nodes[1].status = NodeStatus::Unreachable;
    let p = run(&i);
    assert!(p.allocations.is_empty());
    assert_eq!(
        p.unplaceable[0].reason,
        "process web needs a free volume `data`; 1 exists, the free one(s) on nodes that are not ready: b (unreachable)"
    );
}

#[test]
fn a_release_change_with_volumes_stops_the_old_instance_before_its_replacement() {
    let mut input = Input {
        nodes: vec![ready("a", 4096)],
        groups: vec![with_data(group("web", 1, "r2", 256))],
        volumes: vec![vol("v1", "a", Some("old"))],
        instances: vec![web("old", "r1", Status::Ready, 0)],
        now: 0,
    };
    // The old instance stops first; its replacement waits for the volume.
    let p = run(&input);
    assert_eq!(stopped(&p), [("old", "replaced by release r2")]);
    assert!(p.allocations.is_empty());
    assert!(p.unplaceable[0].reason.ends_with("1 exists, it is attached"), "{}", p.unplaceable[0].reason);
    assert!(p.unplaceable[0].hint.starts_with("held by old"), "{}", p.unplaceable[0].hint);

    // Stopping: still holds the volume.
    input.instances[0].desired = Desired::Stopped;
    input.instances[0].status = Status::Stopping;
    let p = run(&input);
    assert!(p.allocations.is_empty() && p.stops.is_empty());
    assert_eq!(
        p.unplaceable[0].hint.split(';').next().unwrap(),
        "held by old (stopping: it frees the volume when it ends)"
    );

    // Ended: the volume is detached and the replacement takes it, on the same node.
    input.instances[0].status = Status::Exited;
    let p = run(&input);
    assert_eq!(p.detaches, vec![Detach { volume: "v1".into(), instance: "old".into() }]);
    assert_eq!(placed(&p), ["a"]);
    assert_eq!(p.allocations[0].volumes, vec![("data".to_owned(), "v1".to_owned())]);
    assert_eq!(p.allocations[0].release, "r2");
}

/// `web` of `env` with `scaling.suspend`.
fn sleepy(replicas: u32, release: &str) -> Group {
    Group { suspend: true, ..group("web", replicas, release, 256) }
}

/// An instance of `env/web` on `node` suspended (desired and reported).
fn asleep(id: &str, node: &str, release: &str, order: u64) -> Instance {
    Instance { desired: Desired::Suspended, status: Status::Suspended, ..inst(id, node, "web", release, 256, order) }
}

fn ids(s: &[Suspend]) -> Vec<&str> {
    s.iter().map(|s| s.instance.as_str()).collect()
}

#[test]
fn table_of_suspends_and_resumes() {
    struct Case {
        name: &'static str,
        nodes: Vec<Node>,
        instances: Vec<Instance>,
        groups: Vec<Group>,
        suspended: Vec<&'static str>,
        resumed: Vec<&'static str>,
        stopped: Vec<&'static str>,
        placed: Vec<&'static str>,
    }
    let starting = Instance { status: Status::Starting, ready_since: None, ..inst("i3", "a", "web", "r1", 256, 3) };
    let cases = vec![
        Case {
            name: "scale to 0 with suspend: running instances are suspended, a starting one stopped",
            nodes: vec![ready("a", 4096)],
            instances: vec![inst("i1", "a", "web", "r1", 256, 1), web("i2", "r1", Status::Running, 2), starting],
            groups: vec![sleepy(0, "r1")],
            suspended: vec!["i1", "i2"],
            resumed: vec![],
            stopped: vec!["i3"],
            placed: vec![],
        },
        Case {
            name: "scale to 0 without suspend stops",
            nodes: vec![ready("a", 4096)],
            instances: vec![inst("i1", "a", "web", "r1", 256, 1)],
            groups: vec![group("web", 0, "r1", 256)],
            suspended: vec![],
            resumed: vec![],
            stopped: vec!["i1"],
            placed: vec![],
        },
        Case {
            name: "suspended instances stay so at 0",
            nodes: vec![ready("a", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(0, "r1")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "scale up resumes the oldest suspended first, then places new ones",
            nodes: vec![ready("a", 4096), ready("b", 4096)],
            instances: vec![asleep("i2", "a", "r1", 2), asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(3, "r1")],
            suspended: vec![],
            resumed: vec!["i1", "i2"],
            stopped: vec![],
            placed: vec!["b"],
        },
        Case {
            name: "scale up to fewer than suspended: the rest stays suspended",
            nodes: vec![ready("a", 4096)],
            instances: vec![asleep("i2", "a", "r1", 2), asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec!["i1"],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "a resuming instance counts as a replica",
            nodes: vec![ready("a", 4096)],
            instances: vec![Instance { desired: Desired::Running, ..asleep("i1", "a", "r1", 1) }],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "a resuming instance scaled to 0 again is suspended again",
            nodes: vec![ready("a", 4096)],
            instances: vec![Instance { desired: Desired::Running, ..asleep("i1", "a", "r1", 1) }],
            groups: vec![sleepy(0, "r1")],
            suspended: vec!["i1"],
            resumed: vec![],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "an instance reported preparing its resume, scaled to 0 again: suspended again, not stopped",
            nodes: vec![ready("a", 4096)],
            instances: vec![
                Instance { status: Status::Resuming, ready_since: None, ..inst("i1", "a", "web", "r1", 256, 1) },
                Instance { status: Status::Starting, ready_since: None, ..inst("i2", "a", "web", "r1", 256, 2) },
            ],
            groups: vec![sleepy(0, "r1")],
            suspended: vec!["i1"],
            resumed: vec![],
            stopped: vec!["i2"],
            placed: vec![],
        },
        Case {
            name: "a resuming instance counts as a replica while it prepares: nothing new is placed",
            nodes: vec![ready("a", 4096)],
            instances: vec![Instance {
                status: Status::Resuming,
                ready_since: None,
                ..inst("i1", "a", "web", "r1", 256, 1)
            }],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "suspended again while it was resuming, then scaled up: resumed again, nothing new placed",
            nodes: vec![ready("a", 4096)],
            instances: vec![Instance {
                status: Status::Resuming,
                desired: Desired::Suspended,
                ready_since: None,
                ..inst("i1", "a", "web", "r1", 256, 1)
            }],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec!["i1"],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "a suspended instance uses no memory: a new one fits beside it",
            nodes: vec![ready("a", 256)],
            instances: vec![
                asleep("i1", "a", "r1", 1),
                Instance { process: "db".into(), ..asleep("i2", "a", "r1", 2) },
            ],
            groups: vec![
                sleepy(0, "r1"),
                Group { suspend: true, ..group("db", 0, "r1", 256) },
                group("cache", 1, "r1", 256),
            ],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec!["a"],
        },
        Case {
            name: "no room on its node: not resumed, placed elsewhere, still suspended",
            nodes: vec![ready("a", 256), ready("b", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1), inst("i2", "a", "db", "r1", 256, 2)],
            groups: vec![sleepy(1, "r1"), group("db", 1, "r1", 256)],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec!["b"],
        },
        Case {
            name: "its node draining: not resumed, placed elsewhere",
            nodes: vec![node("a", NodeStatus::Draining, 4000, 4096), ready("b", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec![],
            placed: vec!["b"],
        },
        Case {
            name: "another release: the suspended instance is stopped, a new one placed",
            nodes: vec![ready("a", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(1, "r2")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec!["i1"],
            placed: vec!["a"],
        },
        Case {
            name: "no longer suspends at 0: the snapshot is discarded",
            nodes: vec![ready("a", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![group("web", 0, "r1", 256)],
            suspended: vec![],
            resumed: vec![],
            stopped: vec!["i1"],
            placed: vec![],
        },
        Case {
            name: "without suspend, a scale up still resumes what was suspended",
            nodes: vec![ready("a", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![group("web", 1, "r1", 256)],
            suspended: vec![],
            resumed: vec!["i1"],
            stopped: vec![],
            placed: vec![],
        },
        Case {
            name: "its node unreachable: stopped and replaced",
            nodes: vec![node("a", NodeStatus::Unreachable, 4000, 4096), ready("b", 4096)],
            instances: vec![asleep("i1", "a", "r1", 1)],
            groups: vec![sleepy(1, "r1")],
            suspended: vec![],
            resumed: vec![],
            stopped: vec!["i1"],
            placed: vec!["b"],
        },
    ];
    for c in cases {
        let input = Input { nodes: c.nodes, instances: c.instances, groups: c.groups, volumes: vec![], now: 0 };
        let p = run(&input);
        assert_eq!(ids(&p.suspends), c.suspended, "{}: suspended", c.name);
        assert_eq!(ids(&p.resumes), c.resumed, "{}: resumed", c.name);
        assert_eq!(stopped(&p).iter().map(|s| s.0).collect::<Vec<_>>(), c.stopped, "{}: stopped", c.name);
        assert_eq!(placed(&p), c.placed, "{}: placed", c.name);
    }
}

#[test]
fn a_suspended_instance_keeps_its_volume() {
    let input = Input {
        nodes: vec![ready("a", 4096)],
        instances: vec![asleep("i1", "a", "r1", 1)],
        groups: vec![Group { volumes: vec!["data".into()], ..sleepy(0, "r1") }],
        volumes: vec![Volume {
            id: "v1".into(),
            env: "env".into(),
            name: "data".into(),
            node: "id-a".into(),
            attached_to: Some("i1".into()),
        }],
        now: 0,
    };
    let p = run(&input);
    assert!(p.detaches.is_empty(), "{p:?}");
    let up = Input { groups: vec![Group { volumes: vec!["data".into()], ..sleepy(1, "r1") }], ..input };
    let p = run(&up);
    assert_eq!(ids(&p.resumes), vec!["i1"]);
    assert!(p.allocations.is_empty() && p.detaches.is_empty(), "{p:?}");
}
