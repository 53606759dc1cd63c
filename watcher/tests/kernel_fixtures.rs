//! Recorded kernel OOM reports, from kernel 3.10 to 6.18, cgroup v1 and v2, the cgroupfs and
//! systemd drivers, containerd, CRI-O and Docker: each must yield exactly the kills it holds,
//! with the right process, cgroup and Kubernetes identity, the limit that fired, and the process
//! that triggered the kill when it was not the victim.
//!
//! `*.kmsg` fixtures are raw `/dev/kmsg` records of real kills (recorded with the cgroup layouts
//! the kubelet creates); `*.txt` fixtures are kernel messages, one per line, from other kernel
//! generations (each file's header says where it comes from).

use std::path::Path;

use bonker_protocol::Limit;
use bonker_watcher::identity::{QosClass, Runtime, identify};
use bonker_watcher::kmsg::parse_record;
use bonker_watcher::limit;
use bonker_watcher::parser::{Assembled, KernelKill, OomAssembler, Trigger};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    String::from_utf8_lossy(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .into_owned()
}

/// Runs a fixture through the assembler; returns the kills and the number of parse failures.
fn assemble(name: &str) -> (Vec<KernelKill>, usize) {
    let text = fixture(name);
    let mut assembler = OomAssembler::new();
    let mut outputs = Vec::new();
    if name.ends_with(".kmsg") {
        // One record per line; ` KEY=value` continuation lines belong to the record before.
        let mut records: Vec<String> = Vec::new();
        for line in text.lines() {
            match (line.starts_with(' '), records.last_mut()) {
                (true, Some(last)) => {
                    last.push('\n');
                    last.push_str(line);
                }
                _ => records.push(line.to_owned()),
            }
        }
        for raw in records {
            let record = parse_record(raw.as_bytes()).expect("recorded records parse");
            assert!(record.is_from_kernel(), "{raw}");
            outputs.extend(assembler.push(record.seq, record.timestamp_us, &record.message));
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            outputs.extend(assembler.push(n as u64, n as u64 * 1000, line));
        }
    }
    outputs.extend(assembler.flush());
    let mut kills = Vec::new();
    let mut failures = 0;
    for output in outputs {
        match output {
            Assembled::Kill(kill) => kills.push(kill),
            Assembled::ParseFailure(error) => {
                eprintln!("{name}: {error}");
                failures += 1;
            }
        }
    }
    (kills, failures)
}

fn trigger(process: &str, pid: Option<u32>) -> Option<Trigger> {
    Some(Trigger {
        process: process.to_owned(),
        pid,
    })
}

fn only_kill(name: &str) -> KernelKill {
    let (kills, failures) = assemble(name);
    assert_eq!(failures, 0, "{name}");
    assert_eq!(kills.len(), 1, "{name}: {kills:?}");
    kills.into_iter().next().expect("one kill")
}

#[test]
fn kernel_6_18_cgroup_v1_systemd_driver_containerd_burstable() {
    let kill = only_kill("linux-6.18-v1-systemd-containerd-burstable.kmsg");
    assert_eq!((kill.process.as_str(), kill.seq), ("python3", 583));
    assert_eq!(kill.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Pod));
    // The victim's own main thread allocated (the stack dump's PID is the victim's).
    assert_eq!(kill.trigger, None);
    assert_eq!(kill.rss_kb, Some(48_896 + 6_644));
    // The pod's limit was hit; the victim lived in the container below it.
    let limit = identify(kill.oom_memcg.as_deref().expect("oom_memcg"));
    assert_eq!(limit.container_id, None);
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("3f0e5a1c-7b2d-4c8e-9a61-2d4b8c7e9f10")
    );
    assert_eq!(victim.qos, Some(QosClass::Burstable));
    assert_eq!(victim.runtime, Some(Runtime::Containerd));
    assert_eq!(
        victim.container_id.as_deref(),
        Some("5d1f0c3b9e8a47d2b6c1f0e9d8c7b6a5e4d3c2b1a09f8e7d6c5b4a3928170615")
    );
}

#[test]
fn kernel_6_18_cgroup_v1_cgroupfs_driver_guaranteed() {
    let kill = only_kill("linux-6.18-v1-cgroupfs-guaranteed.kmsg");
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Container));
    assert_eq!(kill.trigger, None);
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("9b2c4d6e-1a3f-4b5c-8d7e-0f1a2b3c4d5e")
    );
    assert_eq!(victim.qos, Some(QosClass::Guaranteed));
    assert_eq!(victim.runtime, None);
    assert_eq!(
        victim.container_id.as_deref(),
        Some("0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9")
    );
}

#[test]
fn kernel_6_18_cgroup_v1_crio_besteffort_with_a_container_subgroup() {
    let kill = only_kill("linux-6.18-v1-systemd-crio-besteffort-subgroup.kmsg");
    // The limit is on the container's scope; the processes live in a subgroup of it.
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Container));
    assert_eq!(kill.trigger, None);
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert!(
        kill.task_memcg
            .as_deref()
            .is_some_and(|p| p.ends_with("/container"))
    );
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("77aa88bb-99cc-4dde-8eff-001122334455")
    );
    assert_eq!(victim.qos, Some(QosClass::BestEffort));
    assert_eq!(victim.runtime, Some(Runtime::CriO));
    assert_eq!(
        victim.container_id.as_deref(),
        Some("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210")
    );
}

#[test]
fn kernel_3_10_legacy_task_in_line_and_no_shmem() {
    let kill = only_kill("linux-3.10-el7-cgroupfs-docker.txt");
    assert_eq!((kill.pid, kill.process.as_str()), (28438, "java"));
    assert_eq!(kill.constraint, None);
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Container));
    // The allocating thread (5282) is not in the task table: one of java's own threads.
    assert_eq!(kill.trigger, None);
    assert_eq!(kill.rss_kb, Some(466_160 + 13_684));
    let victim = identify(kill.task_memcg.as_deref().expect("from the Task in line"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("95387fa4-da9c-11e7-9d36-5254b24cbf5e")
    );
    assert_eq!(victim.qos, Some(QosClass::Guaranteed));
}

#[test]
fn kernel_4_x_sacrifice_child_reports_the_child() {
    let kill = only_kill("linux-4.15-cgroupfs-docker-sacrifice-child.txt");
    assert_eq!((kill.pid, kill.process.as_str()), (62769, "cp"));
    // bash's allocation made the kernel choose bash, which sacrificed its child.
    assert_eq!(kill.trigger, trigger("bash", Some(62685)));
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Container));
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("951f6bc5-c5a5-11ea-8707-80e455f266a2")
    );
}

#[test]
fn kernel_4_x_systemd_driver_with_docker() {
    let kill = only_kill("linux-4.x-systemd-docker-burstable.txt");
    // Without a stack dump or task table, the other name is what tells them apart.
    assert_eq!(kill.trigger, trigger("pilot-agent", None));
    assert_eq!(kill.process, "envoy");
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("0330b2c1-a15b-4cdd-b5e5-72d4a90bee82")
    );
    assert_eq!(victim.runtime, Some(Runtime::Docker));
    assert_eq!(victim.qos, Some(QosClass::Burstable));
}

#[test]
fn kernel_4_x_crio_runtime_init_with_an_odd_name() {
    let kill = only_kill("linux-4.18-crio-runc-init.txt");
    assert_eq!(
        (kill.pid, kill.process.as_str()),
        (387_951, "runc:[2:INIT]")
    );
    // No summary before 4.19 and no Task-in line in this excerpt: the counters must say where.
    assert_eq!(kill.task_memcg, None);
    assert_eq!(limit::of_kernel_kill(&kill), None);
    assert_eq!(kill.trigger, None);
}

#[test]
fn distribution_kernels_that_print_the_uid_first() {
    let (kills, failures) = assemble("linux-4.x-el-uid-variant.txt");
    assert_eq!(failures, 0);
    let pids: Vec<u32> = kills.iter().map(|k| k.pid).collect();
    assert_eq!(pids, [799_153, 799_402, 799_889]);
    assert!(kills.iter().all(|k| k.process == "node"));
}

#[test]
fn kernel_5_x_cgroup_v2_nested_node_with_bitmap_mems() {
    let kill = only_kill("linux-5.15-v2-systemd-containerd-nested.txt");
    assert_eq!(limit::of_kernel_kill(&kill), Some(Limit::Pod));
    assert_eq!(kill.trigger, None);
    assert_eq!(
        (kill.pid, kill.process.as_str()),
        (461_754, "pt_main_thread")
    );
    let victim = identify(kill.task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("eded8c65-6e8e-4c6e-a889-3e427565c740")
    );
    assert_eq!(victim.runtime, Some(Runtime::Containerd));
}

#[test]
fn kernel_6_x_oom_group_members_and_a_global_oom() {
    let (kills, failures) = assemble("linux-6.1-v2-oom-group-global.txt");
    assert_eq!(failures, 0);
    let summary: Vec<(u32, bool, bool)> = kills
        .iter()
        .map(|k| (k.pid, k.group_member, k.global))
        .collect();
    assert_eq!(
        summary,
        [
            (4242, false, false),
            (4240, true, false),
            (4243, true, false),
            (999, false, true)
        ]
    );
    let member = identify(kills[1].task_memcg.as_deref().expect("group cgroup"));
    assert_eq!(
        member.pod_uid.as_deref(),
        Some("11111111-2222-3333-4444-555555555555")
    );
    assert_eq!(
        kills[3].task_memcg.as_deref(),
        Some("/system.slice/legacy-batch.service")
    );
    assert!(!identify("/system.slice/legacy-batch.service").is_pod());
    let limits: Vec<Option<Limit>> = kills.iter().map(limit::of_kernel_kill).collect();
    assert_eq!(
        limits,
        [
            Some(Limit::Container),
            Some(Limit::Container),
            Some(Limit::Container),
            Some(Limit::Node)
        ]
    );
    assert!(kills.iter().all(|k| k.trigger.is_none()));
}

#[test]
fn kernel_6_x_node_wide_ooms_name_the_node_and_what_triggered_them() {
    let (kills, failures) = assemble("linux-6.1-v2-node-wide-oom.txt");
    assert_eq!(failures, 0);
    let summary: Vec<(u32, &str, bool, bool)> = kills
        .iter()
        .map(|k| (k.pid, k.process.as_str(), k.global, k.group_member))
        .collect();
    assert_eq!(
        summary,
        [
            (2412, "java", true, false),
            (3301, "java", true, false),
            (3290, "sh", true, true)
        ]
    );
    for kill in &kills[..2] {
        assert_eq!(kill.constraint.as_deref(), Some("CONSTRAINT_NONE"));
        assert_eq!(limit::of_kernel_kill(kill), Some(Limit::Node));
    }
    // The allocating threads (1203, 538) are not in the task table; their processes are the
    // ones listed under their names.
    assert_eq!(kills[0].trigger, trigger("kubelet", Some(1187)));
    assert_eq!(kills[1].trigger, trigger("containerd", Some(511)));
    assert_eq!(kills[2].trigger, None);
    assert!(!identify(kills[0].task_memcg.as_deref().expect("task_memcg")).is_pod());
    let victim = identify(kills[1].task_memcg.as_deref().expect("task_memcg"));
    assert_eq!(
        victim.pod_uid.as_deref(),
        Some("6c1d2e3f-4a5b-4c6d-8e7f-90a1b2c3d4e5")
    );
    assert_eq!(victim.qos, Some(QosClass::Burstable));
}
