//! Which memory limit fired: the `limit` of a watcher bonk's `kill`.
//!
//! The kernel says which kind of limit it enforced in its summary's `constraint=`:
//!
//! | constraint | limit |
//! |---|---|
//! | `CONSTRAINT_NONE` | `node`: the whole node ran out of memory |
//! | `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY` | `numa`: the memory nodes the task may use ran out |
//! | `CONSTRAINT_MEMCG` | the cgroup named by `oom_memcg`: `container` when it is a container's cgroup, `pod` when it is a pod's, `cgroup` for anything else (a QoS slice, a systemd service) |
//!
//! `oom_memcg` is the cgroup whose limit was hit, which need not be the victim's own: a pod's
//! limit is hit by all its containers together, and the kernel then kills in whichever container
//! it chooses. Where the kernel's summary is missing (rate-limited away, or a kernel before 4.19
//! without a `Task in … killed as a result of limit of …` line) and for kills only the memory
//! cgroup counters saw, the limit is taken from the cgroup that counted the kill — the victim's
//! container, or its pod when the container's cgroup was already removed — which is the likeliest
//! but not certain.

use bonker_protocol::Limit;

use crate::identity::identify;
use crate::parser::KernelKill;

/// The limit behind a kill from the kernel log, as far as its report says.
pub fn of_kernel_kill(kill: &KernelKill) -> Option<Limit> {
    match kill.constraint.as_deref() {
        Some("CONSTRAINT_NONE") => Some(Limit::Node),
        Some("CONSTRAINT_CPUSET" | "CONSTRAINT_MEMORY_POLICY") => Some(Limit::Numa),
        Some("CONSTRAINT_MEMCG") => Some(
            kill.oom_memcg
                .as_deref()
                .or(kill.task_memcg.as_deref())
                .map_or(Limit::Cgroup, of_cgroup),
        ),
        Some(_) => Some(Limit::Other),
        // No summary: the kill line's "Out of memory" context, the legacy line's limit, or the
        // cgroup the counters found.
        None if kill.global => Some(Limit::Node),
        None => kill
            .oom_memcg
            .as_deref()
            .or(kill.task_memcg.as_deref())
            .map(of_cgroup),
    }
}

/// The limit of the memory cgroup at `path`: a container's, a pod's, or another cgroup's.
pub fn of_cgroup(path: &str) -> Limit {
    let identity = identify(path);
    if identity.runtime_monitor {
        // CRI-O's conmon: a cgroup of its own beside the containers, not one of them.
        Limit::Cgroup
    } else if identity.container_id.is_some() {
        Limit::Container
    } else if identity.pod_uid.is_some() {
        Limit::Pod
    } else {
        Limit::Cgroup
    }
}

/// The limit as the bonk's text says it.
pub(crate) fn phrase(limit: Limit, oom_cgroup: Option<&str>) -> String {
    match (limit, oom_cgroup) {
        (Limit::Container, _) => "at the container's memory limit".to_owned(),
        (Limit::Pod, _) => "at the pod's memory limit".to_owned(),
        (Limit::Cgroup, Some(cgroup)) => format!("at the memory limit of {cgroup}"),
        (Limit::Cgroup, None) => "at a memory cgroup's limit".to_owned(),
        (Limit::Node, _) => "the node ran out of memory".to_owned(),
        (Limit::Numa, _) => "its NUMA nodes ran out of memory".to_owned(),
        (Limit::Other, _) => "at a memory limit".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod3f0e5a1c_7b2d_4c8e_9a61_2d4b8c7e9f10.slice";

    fn kill(constraint: Option<&str>, oom_memcg: Option<&str>, global: bool) -> KernelKill {
        KernelKill {
            seq: 1,
            first_seq: 1,
            timestamp_us: 1,
            pid: 1,
            process: "x".into(),
            task_memcg: Some(format!("{POD}/cri-containerd-{}.scope", "ab".repeat(32))),
            oom_memcg: oom_memcg.map(str::to_owned),
            global,
            constraint: constraint.map(str::to_owned),
            trigger: None,
            rss_kb: None,
            group_member: false,
            memcg_is_ancestor: false,
        }
    }

    #[test]
    fn constraints_name_the_limit() {
        let container = format!("{POD}/cri-containerd-{}.scope", "ab".repeat(32));
        let memcg = Some("CONSTRAINT_MEMCG");
        assert_eq!(
            of_kernel_kill(&kill(memcg, Some(&container), false)),
            Some(Limit::Container)
        );
        assert_eq!(
            of_kernel_kill(&kill(memcg, Some(POD), false)),
            Some(Limit::Pod)
        );
        assert_eq!(
            of_kernel_kill(&kill(memcg, Some("/kubepods.slice"), false)),
            Some(Limit::Cgroup)
        );
        assert_eq!(
            of_kernel_kill(&kill(Some("CONSTRAINT_NONE"), None, true)),
            Some(Limit::Node)
        );
        assert_eq!(
            of_kernel_kill(&kill(Some("CONSTRAINT_CPUSET"), None, false)),
            Some(Limit::Numa)
        );
        assert_eq!(
            of_kernel_kill(&kill(Some("CONSTRAINT_MEMORY_POLICY"), None, false)),
            Some(Limit::Numa)
        );
        assert_eq!(
            of_kernel_kill(&kill(Some("CONSTRAINT_FUTURE"), None, false)),
            Some(Limit::Other)
        );
    }

    #[test]
    fn without_a_summary_the_limit_comes_from_what_is_known() {
        assert_eq!(of_kernel_kill(&kill(None, None, true)), Some(Limit::Node));
        assert_eq!(
            of_kernel_kill(&kill(None, Some(POD), false)),
            Some(Limit::Pod)
        );
        // The counters' cgroup (here the victim's container).
        assert_eq!(
            of_kernel_kill(&kill(None, None, false)),
            Some(Limit::Container)
        );
        let mut unknown = kill(None, None, false);
        unknown.task_memcg = None;
        assert_eq!(of_kernel_kill(&unknown), None);
    }

    #[test]
    fn cgroups_outside_pods_and_runtime_monitors_are_cgroups() {
        assert_eq!(of_cgroup("/system.slice/cron.service"), Limit::Cgroup);
        assert_eq!(
            of_cgroup(&format!("{POD}/crio-conmon-{}.scope", "ab".repeat(32))),
            Limit::Cgroup
        );
        assert_eq!(
            of_cgroup(&format!(
                "/kubepods/burstable/pod3f0e5a1c-7b2d-4c8e-9a61-2d4b8c7e9f10/{}",
                "cd".repeat(32)
            )),
            Limit::Container
        );
    }
}
