//! The rule table: every built-in rule's ID, severity, title and fix hint. `docs/rules.md` has a
//! section per rule (anchor = lowercase ID); a test keeps the two in step.

use std::fmt;

/// How bad a finding is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "unknown severity {other:?}; use low, medium, high or critical"
            )),
        }
    }
}

/// A built-in rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub title: &'static str,
    pub hint: &'static str,
}

impl Rule {
    /// The rule's page in `docs/rules.md`.
    pub fn help_uri(&self) -> String {
        format!("{DOCS_BASE}#{}", self.id.to_ascii_lowercase())
    }
}

/// Where rule documentation lives (relative to the repository).
pub const DOCS_BASE: &str = "https://example.invalid/sigil/blob/main/docs/rules.md";

macro_rules! rules {
    ($( $name:ident = $id:literal, $sev:ident, $title:literal, $hint:literal; )*) => {
        $( pub const $name: Rule = Rule { id: $id, severity: Severity::$sev, title: $title, hint: $hint }; )*
        /// Every built-in rule.
        pub const ALL: &[Rule] = &[$( $name ),*];
    };
}

rules! {
    PSS_PRIVILEGED = "PSS-BASELINE-PRIVILEGED", Critical, "privileged containers",
        "remove securityContext.privileged or set it to false";
    PSS_HOST_NAMESPACES = "PSS-BASELINE-HOST-NAMESPACES", High, "host namespaces",
        "remove hostNetwork, hostPID and hostIPC (or set them to false)";
    PSS_CAPABILITIES_BASELINE = "PSS-BASELINE-CAPABILITIES", High, "capabilities beyond the default set",
        "add only AUDIT_WRITE, CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, MKNOD, NET_BIND_SERVICE, SETFCAP, SETGID, SETPCAP, SETUID, SYS_CHROOT";
    PSS_HOST_PATH = "PSS-BASELINE-HOST-PATH", High, "hostPath volumes",
        "use a persistentVolumeClaim, configMap, secret or emptyDir instead of hostPath";
    PSS_HOST_PORTS = "PSS-BASELINE-HOST-PORTS", High, "host ports",
        "remove hostPort; expose the port through a Service";
    PSS_APPARMOR = "PSS-BASELINE-APPARMOR", High, "AppArmor profile overridden",
        "use appArmorProfile.type RuntimeDefault or Localhost (annotation runtime/default or localhost/<name>)";
    PSS_SELINUX = "PSS-BASELINE-SELINUX", High, "custom SELinux options",
        "leave seLinuxOptions.user and role unset; type only container_t, container_init_t, container_kvm_t (or container_engine_t from v1.31)";
    PSS_PROC_MOUNT = "PSS-BASELINE-PROC-MOUNT", High, "unmasked /proc",
        "remove securityContext.procMount or set it to Default";
    PSS_SECCOMP_BASELINE = "PSS-BASELINE-SECCOMP", High, "seccomp disabled",
        "do not set seccompProfile.type Unconfined; use RuntimeDefault";
    PSS_SYSCTLS = "PSS-BASELINE-SYSCTLS", High, "unsafe sysctls",
        "set only the safe sysctls listed for the Pod Security version";
    PSS_WINDOWS_HOST_PROCESS = "PSS-BASELINE-WINDOWS-HOST-PROCESS", Critical, "Windows HostProcess containers",
        "remove windowsOptions.hostProcess";
    PSS_HOST_PROBES = "PSS-BASELINE-HOST-PROBES", High, "probes or lifecycle hooks that target another host",
        "remove the host field from httpGet/tcpSocket probes and lifecycle handlers";
    PSS_VOLUMES = "PSS-RESTRICTED-VOLUMES", Medium, "volume types outside the restricted set",
        "use only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected or secret volumes";
    PSS_PRIVILEGE_ESCALATION = "PSS-RESTRICTED-PRIVILEGE-ESCALATION", Medium, "privilege escalation allowed",
        "set securityContext.allowPrivilegeEscalation: false on every container";
    PSS_RUN_AS_NON_ROOT = "PSS-RESTRICTED-RUN-AS-NON-ROOT", Medium, "may run as root",
        "set securityContext.runAsNonRoot: true on the pod (and do not set it to false on containers)";
    PSS_RUN_AS_USER = "PSS-RESTRICTED-RUN-AS-USER", Medium, "runs as UID 0",
        "set runAsUser to a non-zero UID, or leave it unset with runAsNonRoot: true";
    PSS_SECCOMP_RESTRICTED = "PSS-RESTRICTED-SECCOMP", Medium, "no seccomp profile",
        "set securityContext.seccompProfile.type: RuntimeDefault on the pod";
    PSS_CAPABILITIES_RESTRICTED = "PSS-RESTRICTED-CAPABILITIES", Medium, "capabilities not dropped",
        "set securityContext.capabilities.drop: [ALL] on every container; add back only NET_BIND_SERVICE";
    PSS_PROC_MOUNT_RESTRICTED = "PSS-RESTRICTED-PROC-MOUNT", Medium, "unmasked /proc in a user namespace",
        "remove securityContext.procMount or set it to Default";
    GPU_NAMESPACE = "SIGIL-GPU-NAMESPACE", High, "GPU requested outside the GPU namespaces",
        "move the workload to a namespace listed in guardrails.gpuNamespaces, or add the namespace there";
    GPU_VISIBLE_DEVICES = "SIGIL-GPU-VISIBLE-DEVICES", High, "GPU visibility variable without a GPU request",
        "remove NVIDIA_VISIBLE_DEVICES/CUDA_VISIBLE_DEVICES/ROCR_VISIBLE_DEVICES/HIP_VISIBLE_DEVICES, or request the GPU through resources.limits";
    GPU_LD_PRELOAD = "SIGIL-GPU-LD-PRELOAD", Critical, "LD_PRELOAD or LD_LIBRARY_PATH in a GPU pod (CVE-2025-23266)",
        "remove LD_PRELOAD/LD_LIBRARY_PATH from GPU pods; bake libraries into the image and upgrade the NVIDIA Container Toolkit to 1.17.8+";
    GPU_DEVICE_HOST_PATH = "SIGIL-GPU-DEVICE-HOSTPATH", Critical, "hostPath to GPU devices, driver state or a container runtime socket",
        "request GPUs with resources.limits (the device plugin mounts the devices); never mount runtime sockets";
    IMAGE_DIGEST = "SIGIL-IMAGE-DIGEST", Medium, "image not pinned by digest",
        "write the image as registry/repo@sha256:<digest> (crane digest <image> prints it)";
    IMAGE_REGISTRY = "SIGIL-IMAGE-REGISTRY", High, "image from a registry the policy does not allow",
        "mirror the image into a registry listed in guardrails.allowedRegistries";
    MODEL_PINNED = "SIGIL-MODEL-PINNED", Medium, "model reference not pinned or not from an allowed source",
        "pin Hugging Face models to a 40-hex commit (--revision / hf://org/name:<sha>), OCI models by @sha256 digest, and use a source listed in models.sources";
    AUTOMOUNT_TOKEN = "SIGIL-AUTOMOUNT-SA-TOKEN", Medium, "service-account token mounted",
        "set automountServiceAccountToken: false, or declare needsKubernetesApi: true for the workload in sigil.yaml";
    TRAINING_DEADLINE = "SIGIL-TRAINING-DEADLINE", Low, "training job without a deadline",
        "set activeDeadlineSeconds (Kubeflow: spec.runPolicy.activeDeadlineSeconds) so a stuck job frees its GPUs";
    NETWORK_POLICY = "SIGIL-NETWORK-POLICY", Medium, "pod not selected by any NetworkPolicy",
        "add a NetworkPolicy whose podSelector selects the pod (sigil reach can generate them)";
    WORKLOAD_MISMATCH = "SIGIL-WORKLOAD-MISMATCH", High, "manifest does not match the workload declared in sigil.yaml",
        "make namespace, serviceAccountName and labels agree with the workload's kubernetes selector in sigil.yaml";
}

/// The rule with `id`, if it is built in.
pub fn by_id(id: &str) -> Option<&'static Rule> {
    ALL.iter().find(|r| r.id == id)
}
