//! Pod Security Standards (baseline and restricted), as the upstream pod-security-admission
//! library implements them, check by check and version by version. Checked against the upstream
//! fixtures (`shared/fixtures/pod-security-admission`) in `tests/pss_fixtures.rs`.
//!
//! Pure: `ObjectMeta` + `PodSpec` in, violations out.

use sigil_kube::k8s_openapi::api::core::v1::{PodSpec, Probe, SecurityContext};
use sigil_kube::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sigil_policy::PodSecurityLevel;

use crate::containers::{self, ContainerView};
use crate::rules::{self, Rule};

/// The newest Kubernetes minor version whose policy this build knows; `latest` means it.
pub const LATEST_MINOR: u32 = 37;

/// A Pod Security Standards version (`v1.N` or `latest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PssVersion(pub u32);

impl PssVersion {
    pub const LATEST: Self = Self(LATEST_MINOR);

    /// Parses `latest` or `v1.N` (newer versions than this build knows evaluate as `latest`, as
    /// upstream does).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "latest" {
            return Ok(Self::LATEST);
        }
        let minor = s
            .strip_prefix("v1.")
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| {
                format!("bad Pod Security version {s:?}; use `latest` or v1.N such as v1.30")
            })?;
        Ok(Self(minor.min(LATEST_MINOR)))
    }
}

impl std::fmt::Display for PssVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v1.{}", self.0)
    }
}

/// One Pod Security violation; `field` is relative to the pod spec (or `metadata.` for annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static Rule,
    pub container: Option<String>,
    pub field: String,
    pub message: String,
}

struct Out(Vec<Violation>);

impl Out {
    fn pod(&mut self, rule: &'static Rule, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            rule,
            container: None,
            field: field.into(),
            message: message.into(),
        });
    }
    fn c(
        &mut self,
        rule: &'static Rule,
        c: &ContainerView<'_>,
        field: &str,
        message: impl Into<String>,
    ) {
        self.0.push(Violation {
            rule,
            container: Some(c.name.to_owned()),
            field: format!("{}.{field}", c.path()),
            message: message.into(),
        });
    }
}

/// Checks a pod against a level at a version. `Privileged` allows everything.
pub fn check(
    meta: &ObjectMeta,
    spec: &PodSpec,
    level: PodSecurityLevel,
    version: PssVersion,
) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    if level == PodSecurityLevel::Privileged {
        return out.0;
    }
    let v = version.0;
    let cs = containers::all(spec);
    let restricted = level == PodSecurityLevel::Restricted;
    host_namespaces(spec, &mut out);
    privileged(&cs, &mut out);
    if !(restricted && v >= 22) {
        capabilities_baseline(&cs, &mut out);
    }
    host_path(spec, &mut out);
    host_ports(&cs, &mut out);
    apparmor(meta, spec, &cs, &mut out);
    selinux(spec, &cs, v, &mut out);
    if !(restricted && v >= 35) {
        proc_mount(spec, &cs, v, &mut out);
    }
    if !(restricted && v >= 19) {
        seccomp_baseline(meta, spec, &cs, v, &mut out);
    }
    sysctls(spec, v, &mut out);
    windows_host_process(spec, &cs, &mut out);
    if v >= 34 {
        host_probes(&cs, &mut out);
    }
    if restricted {
        let windows = v >= 25
            && spec
                .os
                .as_ref()
                .is_some_and(|os| os.name.eq_ignore_ascii_case("windows"));
        volumes(spec, &mut out);
        if v >= 8 && !windows {
            privilege_escalation(&cs, &mut out);
        }
        run_as_non_root(spec, &cs, &mut out);
        if v >= 23 {
            run_as_user(spec, &cs, &mut out);
        }
        if v >= 19 && !windows {
            seccomp_restricted(spec, &cs, &mut out);
        }
        if v >= 22 && !windows {
            capabilities_restricted(&cs, &mut out);
        }
        if v >= 35 {
            proc_mount_restricted(&cs, &mut out);
        }
    }
    out.0
}

fn host_namespaces(spec: &PodSpec, out: &mut Out) {
    for (field, set) in [
        ("hostNetwork", spec.host_network),
        ("hostPID", spec.host_pid),
        ("hostIPC", spec.host_ipc),
    ] {
        if set == Some(true) {
            out.pod(
                &rules::PSS_HOST_NAMESPACES,
                field,
                format!("{field}=true shares the node's namespace"),
            );
        }
    }
}

fn privileged(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        if c.sc.and_then(|s| s.privileged) == Some(true) {
            out.c(
                &rules::PSS_PRIVILEGED,
                c,
                "securityContext.privileged",
                "securityContext.privileged=true gives the container full access to the node",
            );
        }
    }
}

const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_caps<'a>(c: &ContainerView<'a>) -> &'a [String] {
    c.sc.and_then(|s| s.capabilities.as_ref())
        .and_then(|caps| caps.add.as_deref())
        .unwrap_or_default()
}

fn capabilities_baseline(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        let bad: Vec<&str> = added_caps(c)
            .iter()
            .map(String::as_str)
            .filter(|cap| !BASELINE_CAPS.contains(cap))
            .collect();
        if !bad.is_empty() {
            out.c(
                &rules::PSS_CAPABILITIES_BASELINE,
                c,
                "securityContext.capabilities.add",
                format!("adds capabilities {}", bad.join(", ")),
            );
        }
    }
}

fn host_path(spec: &PodSpec, out: &mut Out) {
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        if let Some(hp) = &v.host_path {
            out.pod(
                &rules::PSS_HOST_PATH,
                format!("volumes[{i}].hostPath"),
                format!("volume {:?} mounts host path {}", v.name, hp.path),
            );
        }
    }
}

fn host_ports(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        for (i, p) in c.ports.into_iter().flatten().enumerate() {
            if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
                out.c(
                    &rules::PSS_HOST_PORTS,
                    c,
                    &format!("ports[{i}].hostPort"),
                    format!("binds host port {hp}"),
                );
            }
        }
    }
}

fn apparmor_ok(p: Option<&sigil_kube::k8s_openapi::api::core::v1::AppArmorProfile>) -> bool {
    p.is_none_or(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost")
}

fn apparmor(meta: &ObjectMeta, spec: &PodSpec, cs: &[ContainerView<'_>], out: &mut Out) {
    if let Some(p) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.as_ref())
        .filter(|p| !apparmor_ok(Some(p)))
    {
        out.pod(
            &rules::PSS_APPARMOR,
            "securityContext.appArmorProfile.type",
            format!("pod sets AppArmor profile type {:?}", p.type_),
        );
    }
    for c in cs {
        if let Some(p) =
            c.sc.and_then(|s| s.app_armor_profile.as_ref())
                .filter(|p| !apparmor_ok(Some(p)))
        {
            out.c(
                &rules::PSS_APPARMOR,
                c,
                "securityContext.appArmorProfile.type",
                format!("sets AppArmor profile type {:?}", p.type_),
            );
        }
    }
    const PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
    for (k, v) in meta.annotations.iter().flatten() {
        if k.starts_with(PREFIX)
            && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        {
            out.pod(
                &rules::PSS_APPARMOR,
                format!("metadata.annotations[{k}]"),
                format!("annotation {k}={v:?} overrides AppArmor"),
            );
        }
    }
}

fn selinux(spec: &PodSpec, cs: &[ContainerView<'_>], v: u32, out: &mut Out) {
    let allowed_type = |t: &str| {
        matches!(
            t,
            "" | "container_t" | "container_init_t" | "container_kvm_t"
        ) || (v >= 31 && t == "container_engine_t")
    };
    let bad = |o: &sigil_kube::k8s_openapi::api::core::v1::SELinuxOptions| {
        let mut why = Vec::new();
        if let Some(t) = o.type_.as_deref().filter(|t| !allowed_type(t)) {
            why.push(format!("type {t:?}"));
        }
        if let Some(u) = o.user.as_deref().filter(|u| !u.is_empty()) {
            why.push(format!("user {u:?}"));
        }
        if let Some(r) = o.role.as_deref().filter(|r| !r.is_empty()) {
            why.push(format!("role {r:?}"));
        }
        why
    };
    if let Some(o) = spec
        .security_context
        .as_ref()
        .and_then(|s| s.se_linux_options.as_ref())
    {
        let why = bad(o);
        if !why.is_empty() {
            out.pod(
                &rules::PSS_SELINUX,
                "securityContext.seLinuxOptions",
                format!("pod sets SELinux {}", why.join(", ")),
            );
        }
    }
    for c in cs {
        if let Some(o) = c.sc.and_then(|s| s.se_linux_options.as_ref()) {
            let why = bad(o);
            if !why.is_empty() {
                out.c(
                    &rules::PSS_SELINUX,
                    c,
                    "securityContext.seLinuxOptions",
                    format!("sets SELinux {}", why.join(", ")),
                );
            }
        }
    }
}

fn proc_mount_value<'a>(c: &ContainerView<'a>) -> Option<&'a str> {
    c.sc.and_then(|s| s.proc_mount.as_deref())
        .filter(|p| *p != "Default")
}

fn proc_mount(spec: &PodSpec, cs: &[ContainerView<'_>], v: u32, out: &mut Out) {
    // From v1.35 a pod in its own user namespace may unmask /proc at baseline.
    if v >= 35 && spec.host_users == Some(false) {
        return;
    }
    for c in cs {
        if let Some(p) = proc_mount_value(c) {
            out.c(
                &rules::PSS_PROC_MOUNT,
                c,
                "securityContext.procMount",
                format!("sets procMount {p}"),
            );
        }
    }
}

fn proc_mount_restricted(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        if let Some(p) = proc_mount_value(c) {
            out.c(
                &rules::PSS_PROC_MOUNT_RESTRICTED,
                c,
                "securityContext.procMount",
                format!("sets procMount {p}"),
            );
        }
    }
}

fn seccomp_baseline(
    meta: &ObjectMeta,
    spec: &PodSpec,
    cs: &[ContainerView<'_>],
    v: u32,
    out: &mut Out,
) {
    if v < 19 {
        for (k, val) in meta.annotations.iter().flatten() {
            let relevant = k == "seccomp.security.alpha.kubernetes.io/pod"
                || k.starts_with("container.seccomp.security.alpha.kubernetes.io/");
            if relevant && val == "unconfined" {
                out.pod(
                    &rules::PSS_SECCOMP_BASELINE,
                    format!("metadata.annotations[{k}]"),
                    format!("annotation {k}=unconfined disables seccomp"),
                );
            }
        }
        return;
    }
    let unconfined = |sc: Option<&sigil_kube::k8s_openapi::api::core::v1::SeccompProfile>| {
        sc.is_some_and(|p| p.type_ == "Unconfined")
    };
    if unconfined(
        spec.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()),
    ) {
        out.pod(
            &rules::PSS_SECCOMP_BASELINE,
            "securityContext.seccompProfile.type",
            "pod sets seccompProfile.type Unconfined",
        );
    }
    for c in cs {
        if unconfined(c.sc.and_then(|s| s.seccomp_profile.as_ref())) {
            out.c(
                &rules::PSS_SECCOMP_BASELINE,
                c,
                "securityContext.seccompProfile.type",
                "sets seccompProfile.type Unconfined",
            );
        }
    }
}

fn safe_sysctl(name: &str, v: u32) -> bool {
    matches!(
        name,
        "kernel.shm_rmid_forced"
            | "net.ipv4.ip_local_port_range"
            | "net.ipv4.tcp_syncookies"
            | "net.ipv4.ping_group_range"
            | "net.ipv4.ip_unprivileged_port_start"
    ) || (v >= 27 && name == "net.ipv4.ip_local_reserved_ports")
        || (v >= 29
            && matches!(
                name,
                "net.ipv4.tcp_keepalive_time"
                    | "net.ipv4.tcp_fin_timeout"
                    | "net.ipv4.tcp_keepalive_intvl"
                    | "net.ipv4.tcp_keepalive_probes"
            ))
        || (v >= 32 && matches!(name, "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem"))
        || (v >= 37
            && matches!(
                name,
                "net.ipv4.tcp_slow_start_after_idle" | "net.ipv4.tcp_notsent_lowat"
            ))
}

fn sysctls(spec: &PodSpec, v: u32, out: &mut Out) {
    let list = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref());
    for (i, s) in list.into_iter().flatten().enumerate() {
        if !safe_sysctl(&s.name, v) {
            out.pod(
                &rules::PSS_SYSCTLS,
                format!("securityContext.sysctls[{i}].name"),
                format!("sets unsafe sysctl {}", s.name),
            );
        }
    }
}

fn windows_host_process(spec: &PodSpec, cs: &[ContainerView<'_>], out: &mut Out) {
    let host_process = |sc: Option<
        &sigil_kube::k8s_openapi::api::core::v1::WindowsSecurityContextOptions,
    >| { sc.and_then(|w| w.host_process) == Some(true) };
    if host_process(
        spec.security_context
            .as_ref()
            .and_then(|s| s.windows_options.as_ref()),
    ) {
        out.pod(
            &rules::PSS_WINDOWS_HOST_PROCESS,
            "securityContext.windowsOptions.hostProcess",
            "pod runs as a Windows HostProcess",
        );
    }
    for c in cs {
        if host_process(c.sc.and_then(|s| s.windows_options.as_ref())) {
            out.c(
                &rules::PSS_WINDOWS_HOST_PROCESS,
                c,
                "securityContext.windowsOptions.hostProcess",
                "runs as a Windows HostProcess container",
            );
        }
    }
}

fn probe_host(p: &Probe) -> Option<(&'static str, &str)> {
    p.http_get
        .as_ref()
        .and_then(|h| h.host.as_deref())
        .filter(|h| !h.is_empty())
        .map(|h| ("httpGet.host", h))
        .or_else(|| {
            p.tcp_socket
                .as_ref()
                .and_then(|t| t.host.as_deref())
                .filter(|h| !h.is_empty())
                .map(|h| ("tcpSocket.host", h))
        })
}

fn host_probes(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        for (name, p) in c.probes {
            if let Some((f, h)) = p.and_then(probe_host) {
                out.c(
                    &rules::PSS_HOST_PROBES,
                    c,
                    &format!("{name}.{f}"),
                    format!("{name} targets host {h}"),
                );
            }
        }
        let Some(l) = c.lifecycle else { continue };
        for (name, handler) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            let Some(h) = handler else { continue };
            let host = h
                .http_get
                .as_ref()
                .and_then(|x| x.host.as_deref())
                .filter(|x| !x.is_empty())
                .map(|x| ("httpGet.host", x))
                .or_else(|| {
                    h.tcp_socket
                        .as_ref()
                        .and_then(|t| t.host.as_deref())
                        .filter(|x| !x.is_empty())
                        .map(|x| ("tcpSocket.host", x))
                });
            if let Some((f, x)) = host {
                out.c(
                    &rules::PSS_HOST_PROBES,
                    c,
                    &format!("lifecycle.{name}.{f}"),
                    format!("lifecycle {name} targets host {x}"),
                );
            }
        }
    }
}

fn volumes(spec: &PodSpec, out: &mut Out) {
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let bad = [
            ("hostPath", v.host_path.is_some()),
            ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
            ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
            ("gitRepo", v.git_repo.is_some()),
            ("nfs", v.nfs.is_some()),
            ("iscsi", v.iscsi.is_some()),
            ("glusterfs", v.glusterfs.is_some()),
            ("rbd", v.rbd.is_some()),
            ("flexVolume", v.flex_volume.is_some()),
            ("cinder", v.cinder.is_some()),
            ("cephfs", v.cephfs.is_some()),
            ("flocker", v.flocker.is_some()),
            ("fc", v.fc.is_some()),
            ("azureFile", v.azure_file.is_some()),
            ("vsphereVolume", v.vsphere_volume.is_some()),
            ("quobyte", v.quobyte.is_some()),
            ("azureDisk", v.azure_disk.is_some()),
            ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
            ("portworxVolume", v.portworx_volume.is_some()),
            ("scaleIO", v.scale_io.is_some()),
            ("storageos", v.storageos.is_some()),
            ("image", v.image.is_some()),
        ]
        .into_iter()
        .find(|(_, set)| *set);
        if let Some((t, _)) = bad {
            out.pod(
                &rules::PSS_VOLUMES,
                format!("volumes[{i}].{t}"),
                format!("volume {:?} uses restricted volume type {t}", v.name),
            );
        }
    }
}

fn privilege_escalation(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        if c.sc.and_then(|s| s.allow_privilege_escalation) != Some(false) {
            out.c(
                &rules::PSS_PRIVILEGE_ESCALATION,
                c,
                "securityContext.allowPrivilegeEscalation",
                "does not set securityContext.allowPrivilegeEscalation=false",
            );
        }
    }
}

fn run_as_non_root(spec: &PodSpec, cs: &[ContainerView<'_>], out: &mut Out) {
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_non_root);
    if pod == Some(false) {
        out.pod(
            &rules::PSS_RUN_AS_NON_ROOT,
            "securityContext.runAsNonRoot",
            "pod sets runAsNonRoot=false",
        );
    }
    for c in cs {
        match c.sc.and_then(|s| s.run_as_non_root) {
            Some(false) => out.c(
                &rules::PSS_RUN_AS_NON_ROOT,
                c,
                "securityContext.runAsNonRoot",
                "sets runAsNonRoot=false",
            ),
            None if pod != Some(true) => out.c(
                &rules::PSS_RUN_AS_NON_ROOT,
                c,
                "securityContext.runAsNonRoot",
                "neither the pod nor the container sets runAsNonRoot=true",
            ),
            _ => {}
        }
    }
}

fn run_as_user(spec: &PodSpec, cs: &[ContainerView<'_>], out: &mut Out) {
    if spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0) {
        out.pod(
            &rules::PSS_RUN_AS_USER,
            "securityContext.runAsUser",
            "pod sets runAsUser=0",
        );
    }
    for c in cs {
        if c.sc.and_then(|s: &SecurityContext| s.run_as_user) == Some(0) {
            out.c(
                &rules::PSS_RUN_AS_USER,
                c,
                "securityContext.runAsUser",
                "sets runAsUser=0",
            );
        }
    }
}

fn seccomp_restricted(spec: &PodSpec, cs: &[ContainerView<'_>], out: &mut Out) {
    let ok = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let pod = spec
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    if let Some(t) = pod.filter(|t| !ok(t)) {
        out.pod(
            &rules::PSS_SECCOMP_RESTRICTED,
            "securityContext.seccompProfile.type",
            format!("pod sets seccompProfile.type {t:?}"),
        );
    }
    let pod_ok = pod.is_some_and(ok);
    for c in cs {
        match c
            .sc
            .and_then(|s| s.seccomp_profile.as_ref())
            .map(|p| p.type_.as_str())
        {
            Some(t) if !ok(t) => out.c(
                &rules::PSS_SECCOMP_RESTRICTED,
                c,
                "securityContext.seccompProfile.type",
                format!("sets seccompProfile.type {t:?}"),
            ),
            None if !pod_ok => out.c(
                &rules::PSS_SECCOMP_RESTRICTED,
                c,
                "securityContext.seccompProfile.type",
                "neither the pod nor the container sets seccompProfile.type RuntimeDefault or Localhost",
            ),
            _ => {}
        }
    }
}

fn capabilities_restricted(cs: &[ContainerView<'_>], out: &mut Out) {
    for c in cs {
        let caps = c.sc.and_then(|s| s.capabilities.as_ref());
        let drops_all = caps
            .and_then(|x| x.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            out.c(
                &rules::PSS_CAPABILITIES_RESTRICTED,
                c,
                "securityContext.capabilities.drop",
                "does not drop ALL capabilities",
            );
        }
        let bad: Vec<&str> = added_caps(c)
            .iter()
            .map(String::as_str)
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        if !bad.is_empty() {
            out.c(
                &rules::PSS_CAPABILITIES_RESTRICTED,
                c,
                "securityContext.capabilities.add",
                format!(
                    "adds capabilities {} (only NET_BIND_SERVICE is allowed)",
                    bad.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use sigil_kube::k8s_openapi::api::core::v1::PodSpec;
    use test_case::test_case;

    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    fn ids(spec: &PodSpec, level: PodSecurityLevel, v: u32) -> Vec<&'static str> {
        check(&ObjectMeta::default(), spec, level, PssVersion(v))
            .into_iter()
            .map(|v| v.rule.id)
            .collect()
    }

    fn hardened() -> serde_json::Value {
        serde_json::json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "x", "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]
        })
    }

    #[test]
    fn hardened_pod_passes_restricted() {
        assert!(
            ids(
                &spec(hardened()),
                PodSecurityLevel::Restricted,
                LATEST_MINOR
            )
            .is_empty()
        );
    }

    #[test_case("/hostNetwork", serde_json::json!(true), "PSS-BASELINE-HOST-NAMESPACES")]
    #[test_case("/containers/0/securityContext/privileged", serde_json::json!(true), "PSS-BASELINE-PRIVILEGED")]
    #[test_case("/containers/0/securityContext/capabilities/add", serde_json::json!(["SYS_ADMIN"]), "PSS-RESTRICTED-CAPABILITIES")]
    #[test_case("/containers/0/securityContext/runAsUser", serde_json::json!(0), "PSS-RESTRICTED-RUN-AS-USER")]
    #[test_case("/containers/0/securityContext/procMount", serde_json::json!("Unmasked"), "PSS-RESTRICTED-PROC-MOUNT")]
    #[test_case("/securityContext/seccompProfile/type", serde_json::json!("Unconfined"), "PSS-RESTRICTED-SECCOMP")]
    fn single_field_violations(pointer: &str, value: serde_json::Value, rule: &str) {
        let mut j = hardened();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let obj = if parent.is_empty() {
            &mut j
        } else {
            j.pointer_mut(parent).unwrap()
        };
        obj.as_object_mut().unwrap().insert(key.to_owned(), value);
        let mut got = ids(&spec(j), PodSecurityLevel::Restricted, LATEST_MINOR);
        got.dedup();
        assert_eq!(got, [rule]);
    }

    #[test]
    fn versions_matter() {
        let s = spec(serde_json::json!({"containers": [{"name": "c"}],
            "securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]}}));
        assert_eq!(
            ids(&s, PodSecurityLevel::Baseline, 31),
            ["PSS-BASELINE-SYSCTLS"]
        );
        assert!(ids(&s, PodSecurityLevel::Baseline, 32).is_empty());
        assert!(ids(&s, PodSecurityLevel::Privileged, 1).is_empty());
        assert_eq!(
            PssVersion::parse("latest").unwrap(),
            PssVersion(LATEST_MINOR)
        );
        assert_eq!(
            PssVersion::parse("v1.99").unwrap(),
            PssVersion(LATEST_MINOR)
        );
        assert!(PssVersion::parse("1.30").is_err());
    }
}
