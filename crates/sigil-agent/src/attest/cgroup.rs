//! `/proc/<pid>/cgroup` → Kubernetes pod UID and container ID.
//!
//! Owns: recognising the kubelet's cgroup layouts, for cgroup v1 (one line per hierarchy) and v2
//! (the single `0::` line), with the cgroupfs driver (`/kubepods/burstable/pod<uid>/<id>`) and the
//! systemd driver (`kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
//! also `docker-`, `crio-`). Must not: read files (the caller passes the text).

/// Largest cgroup file accepted.
pub const MAX_CGROUP_BYTES: usize = 64 * 1024;

/// The pod and container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// Pod UID, in the API server's form (dashes, lowercase).
    pub pod_uid: String,
    /// Container ID (64 hex characters), without the runtime prefix.
    pub container_id: String,
}

/// Why a cgroup file does not place the process in a Kubernetes container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup file is {0} bytes, more than {MAX_CGROUP_BYTES}")]
    TooLarge(usize),
    #[error(
        "process is not in a Kubernetes pod cgroup (no `kubepods` path); hint: it runs outside Kubernetes, so only unix selectors can match"
    )]
    NotInPod,
    #[error("process is in pod cgroups that disagree: {0} and {1}")]
    Conflicting(String, String),
}

/// Finds the pod UID and container ID in the text of `/proc/<pid>/cgroup`.
pub fn parse(text: &str) -> Result<ContainerRef, CgroupError> {
    if text.len() > MAX_CGROUP_BYTES {
        return Err(CgroupError::TooLarge(text.len()));
    }
    let mut found: Option<ContainerRef> = None;
    for line in text.lines() {
        // hierarchy-ID:controller-list:cgroup-path
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(r) = parse_path(path) else { continue };
        match &found {
            Some(prev) if *prev != r => {
                return Err(CgroupError::Conflicting(
                    format!("{}/{}", prev.pod_uid, prev.container_id),
                    format!("{}/{}", r.pod_uid, r.container_id),
                ));
            }
            Some(_) => {}
            None => found = Some(r),
        }
    }
    found.ok_or(CgroupError::NotInPod)
}

/// One cgroup path, e.g. `/kubepods/besteffort/pod<uid>/<id>` or
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope`.
fn parse_path(path: &str) -> Option<ContainerRef> {
    if !path.contains("kubepods") {
        return None;
    }
    let mut pod_uid = None;
    let mut container_id = None;
    for seg in path.split('/') {
        let seg = seg.strip_suffix(".slice").unwrap_or(seg);
        let seg_scope = seg.strip_suffix(".scope").unwrap_or(seg);
        if let Some(idx) = seg.rfind("pod") {
            let candidate = seg.get(idx + 3..).unwrap_or_default();
            if let Some(uid) = normalise_uid(candidate) {
                pod_uid = Some(uid);
                continue;
            }
        }
        // The container segment: a bare 64-hex ID (cgroupfs) or `<runtime>-<id>.scope` (systemd).
        let id = seg_scope.rsplit(['-', ':']).next().unwrap_or(seg_scope);
        if pod_uid.is_some() && is_container_id(id) {
            container_id = Some(id.to_owned());
        }
    }
    Some(ContainerRef {
        pod_uid: pod_uid?,
        container_id: container_id?,
    })
}

/// Pod UIDs are UUIDs; the systemd driver writes `_` for `-`.
fn normalise_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-").to_ascii_lowercase();
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    let hex = uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    (hex && groups == [8, 4, 4, 4, 12]).then_some(uid)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";
    const CID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";

    #[test_case(include_str!("../../fixtures/cgroup/v1-cgroupfs.txt") ; "v1 cgroupfs driver")]
    #[test_case(include_str!("../../fixtures/cgroup/v1-systemd.txt") ; "v1 systemd driver")]
    #[test_case(include_str!("../../fixtures/cgroup/v2-systemd.txt") ; "v2 systemd driver containerd")]
    #[test_case(include_str!("../../fixtures/cgroup/v2-cgroupfs.txt") ; "v2 cgroupfs driver")]
    #[test_case(include_str!("../../fixtures/cgroup/v2-crio.txt") ; "v2 systemd driver cri-o")]
    fn finds_pod_and_container(text: &str) {
        let r = parse(text).unwrap();
        assert_eq!(r.pod_uid, UID);
        assert_eq!(r.container_id, CID);
    }

    #[test_case("0::/user.slice/user-1000.slice/session-2.scope\n" ; "v2 host process")]
    #[test_case("12:memory:/\n11:cpu,cpuacct:/system.slice/sshd.service\n" ; "v1 host process")]
    #[test_case("0::/kubepods/burstable/pod2c48913c-b29f-11e7-9350-020968147796\n" ; "pod cgroup without container")]
    #[test_case("0::/docker/9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961\n" ; "plain docker container")]
    #[test_case("" ; "empty")]
    fn not_in_pod(text: &str) {
        assert_eq!(parse(text), Err(CgroupError::NotInPod));
    }

    #[test]
    fn conflicting_lines_are_rejected() {
        let text = format!(
            "4:pids:/kubepods/pod{UID}/{CID}\n3:cpu:/kubepods/pod{UID}/{}\n",
            "a".repeat(64)
        );
        assert!(matches!(parse(&text), Err(CgroupError::Conflicting(..))));
    }

    #[test]
    fn oversized_input_is_rejected() {
        let text = "x".repeat(MAX_CGROUP_BYTES + 1);
        assert_eq!(
            parse(&text),
            Err(CgroupError::TooLarge(MAX_CGROUP_BYTES + 1))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = parse(&s);
        }
        #[test]
        fn arbitrary_kubepods_paths_never_panic(a in "[a-z0-9_./:-]{0,200}") {
            let _ = parse(&format!("0::/kubepods{a}"));
        }
    }
}
