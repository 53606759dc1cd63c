//! From a memory cgroup path to the pod and container it belongs to.
//!
//! The kubelet names cgroups after the pod UID and the runtime after the container id, in one of
//! these layouts (the same on cgroup v1 and v2):
//!
//! | driver   | QoS        | path |
//! |----------|------------|------|
//! | cgroupfs | Guaranteed | `/kubepods/pod<uid>/<id>` |
//! | cgroupfs | Burstable  | `/kubepods/burstable/pod<uid>/<id>` (CRI-O: `…/crio-<id>`) |
//! | systemd  | Guaranteed | `/kubepods.slice/kubepods-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd  | BestEffort | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/crio-<id>.scope` |
//!
//! The systemd driver escapes the UID's dashes as underscores; Docker uses `docker-<id>.scope`;
//! crun may put the processes one level deeper (`crio-<id>.scope/container`); CRI-O's monitor
//! lives in `crio-conmon-<id>.scope`; and nested nodes (kind, LXC, a kubelet `cgroupRoot`) put all
//! of it below a prefix such as `/lxc.payload.x/` or `/kubelet.slice/kubelet-kubepods.slice/`.
//! So the mapping looks for the pod component anywhere in the path rather than at fixed depths.

use std::fmt;

/// The Kubernetes quality-of-service class, read from the cgroup path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Requests equal limits; the pod cgroup sits directly under `kubepods`.
    Guaranteed,
    /// Under `burstable`.
    Burstable,
    /// Under `besteffort`.
    BestEffort,
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        })
    }
}

/// The container runtime, when the cgroup name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`.
    Containerd,
    /// `crio-<id>.scope` or `crio-<id>`.
    CriO,
    /// `docker-<id>.scope`.
    Docker,
}

/// What a cgroup path says about Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupIdentity {
    /// The pod UID, normalised to the API's form (lowercase, dashes).
    pub pod_uid: Option<String>,
    /// The container id (hex), as the runtime reports it in `containerID`.
    pub container_id: Option<String>,
    /// The runtime, when the cgroup name says.
    pub runtime: Option<Runtime>,
    /// The QoS class.
    pub qos: Option<QosClass>,
    /// True for CRI-O's per-container monitor (`crio-conmon-<id>.scope`), which is not a
    /// container of the pod.
    pub runtime_monitor: bool,
}

impl CgroupIdentity {
    /// True when the path belongs to a Kubernetes pod.
    pub fn is_pod(&self) -> bool {
        self.pod_uid.is_some()
    }
}

/// Reads the pod UID, container id, runtime and QoS class out of a cgroup path.
pub fn identify(cgroup_path: &str) -> CgroupIdentity {
    let components: Vec<&str> = cgroup_path.split('/').filter(|c| !c.is_empty()).collect();
    let mut identity = CgroupIdentity::default();
    let Some(pod_index) = components.iter().position(|c| pod_uid_of(c).is_some()) else {
        return identity;
    };
    identity.pod_uid = pod_uid_of(components[pod_index]);
    identity.qos = Some(qos_of(&components[..=pod_index]));
    if let Some(container) = components.get(pod_index + 1) {
        let (id, runtime, monitor) = container_of(container);
        identity.container_id = id;
        identity.runtime = runtime;
        identity.runtime_monitor = monitor;
    }
    identity
}

/// `pod<uid>`, `kubepods-burstable-pod<uid_>.slice`, … → the UID with dashes.
fn pod_uid_of(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    // A UID is 36 characters; it ends the component and follows `pod`.
    let start = name.len().checked_sub(36)?;
    let uid = name.get(start..)?;
    if !name[..start].ends_with("pod") {
        return None;
    }
    let uid = uid.replace('_', "-").to_ascii_lowercase();
    let well_formed = uid.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    well_formed.then_some(uid)
}

fn qos_of(components: &[&str]) -> QosClass {
    // The QoS level is the component before the pod, or part of the pod's own systemd name.
    let pod = components.last().copied().unwrap_or_default();
    let parent = components
        .len()
        .checked_sub(2)
        .and_then(|i| components.get(i))
        .copied()
        .unwrap_or_default();
    let mentions = |word: &str| pod.contains(word) || parent.contains(word);
    if mentions("besteffort") {
        QosClass::BestEffort
    } else if mentions("burstable") {
        QosClass::Burstable
    } else {
        QosClass::Guaranteed
    }
}

/// The container component: `<id>`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `crio-<id>`, `docker-<id>.scope`, `crio-conmon-<id>.scope`.
fn container_of(component: &str) -> (Option<String>, Option<Runtime>, bool) {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let (id, runtime, monitor) = if let Some(id) = name.strip_prefix("crio-conmon-") {
        (id, Some(Runtime::CriO), true)
    } else if let Some(id) = name.strip_prefix("cri-containerd-") {
        (id, Some(Runtime::Containerd), false)
    } else if let Some(id) = name.strip_prefix("crio-") {
        (id, Some(Runtime::CriO), false)
    } else if let Some(id) = name.strip_prefix("docker-") {
        (id, Some(Runtime::Docker), false)
    } else {
        (name, None, false)
    };
    let looks_like_id = id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit());
    if looks_like_id {
        (Some(id.to_ascii_lowercase()), runtime, monitor)
    } else {
        (None, None, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "3f0e5a1c-7b2d-4c8e-9a61-2d4b8c7e9f10";
    const UID_: &str = "3f0e5a1c_7b2d_4c8e_9a61_2d4b8c7e9f10";
    const ID: &str = "5d1f0c3b9e8a47d2b6c1f0e9d8c7b6a5e4d3c2b1a09f8e7d6c5b4a3928170615";

    fn check(path: &str, qos: QosClass, runtime: Option<Runtime>, container: bool) {
        let identity = identify(path);
        assert_eq!(identity.pod_uid.as_deref(), Some(UID), "{path}");
        assert_eq!(identity.qos, Some(qos), "{path}");
        assert_eq!(identity.runtime, runtime, "{path}");
        assert_eq!(
            identity.container_id.as_deref(),
            container.then_some(ID),
            "{path}"
        );
    }

    #[test]
    fn cgroupfs_layouts() {
        check(
            &format!("/kubepods/pod{UID}/{ID}"),
            QosClass::Guaranteed,
            None,
            true,
        );
        check(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            QosClass::Burstable,
            None,
            true,
        );
        check(
            &format!("/kubepods/besteffort/pod{UID}/{ID}"),
            QosClass::BestEffort,
            None,
            true,
        );
        check(
            &format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            QosClass::Burstable,
            Some(Runtime::CriO),
            true,
        );
        check(
            &format!("/kubepods/burstable/pod{UID}"),
            QosClass::Burstable,
            None,
            false,
        );
    }

    #[test]
    fn systemd_layouts() {
        let base = "/kubepods.slice";
        check(
            &format!("{base}/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            QosClass::Guaranteed,
            Some(Runtime::Containerd),
            true,
        );
        check(
            &format!(
                "{base}/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/docker-{ID}.scope"
            ),
            QosClass::Burstable,
            Some(Runtime::Docker),
            true,
        );
        check(
            &format!(
                "{base}/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope/container"
            ),
            QosClass::BestEffort,
            Some(Runtime::CriO),
            true,
        );
    }

    #[test]
    fn nested_nodes_and_test_roots() {
        check(
            &format!(
                "/lxc.payload.x/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            QosClass::Burstable,
            Some(Runtime::Containerd),
            true,
        );
        check(
            &format!(
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"
            ),
            QosClass::BestEffort,
            Some(Runtime::Containerd),
            true,
        );
        check(
            &format!("/some-root/kubepods/pod{UID}/{ID}"),
            QosClass::Guaranteed,
            None,
            true,
        );
    }

    #[test]
    fn conmon_is_not_a_container() {
        let identity = identify(&format!(
            "/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope"
        ));
        assert!(identity.runtime_monitor);
        assert_eq!(identity.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn paths_outside_kubernetes_have_no_pod() {
        for path in [
            "/",
            "/system.slice/cron.service",
            "/user.slice/user-1000.slice/session-2.scope",
            "/docker/0123456789abcdef",
            "/kubepods/podnot-a-uid/abc",
            &format!("/kubepods/xpod{UID}x"),
        ] {
            assert!(!identify(path).is_pod(), "{path}");
        }
    }

    #[test]
    fn uppercase_uids_are_normalised_and_odd_container_names_ignored() {
        let identity = identify(&format!("/kubepods/pod{}/not-hex", UID.to_uppercase()));
        assert_eq!(identity.pod_uid.as_deref(), Some(UID));
        assert_eq!(identity.container_id, None);
    }
}
