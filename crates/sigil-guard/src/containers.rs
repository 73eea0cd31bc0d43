//! One view over containers, init containers and ephemeral containers, which k8s-openapi types
//! differently but which the rules treat alike.

use sigil_kube::k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, Lifecycle, PodSpec, Probe, ResourceRequirements, SecurityContext,
};

/// A container of any of the three kinds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerView<'a> {
    pub name: &'a str,
    /// `containers`, `initContainers` or `ephemeralContainers`.
    pub list: &'static str,
    pub index: usize,
    pub image: Option<&'a str>,
    pub command: Option<&'a Vec<String>>,
    pub args: Option<&'a Vec<String>>,
    pub sc: Option<&'a SecurityContext>,
    pub ports: Option<&'a Vec<ContainerPort>>,
    pub probes: [(&'static str, Option<&'a Probe>); 3],
    pub lifecycle: Option<&'a Lifecycle>,
    pub env: Option<&'a Vec<EnvVar>>,
    pub resources: Option<&'a ResourceRequirements>,
}

impl ContainerView<'_> {
    /// Path of the container relative to the pod spec, e.g. `containers[0]`.
    pub fn path(&self) -> String {
        format!("{}[{}]", self.list, self.index)
    }
}

/// Every container in the pod spec, regular ones first.
pub(crate) fn all(spec: &PodSpec) -> Vec<ContainerView<'_>> {
    let mut out = Vec::new();
    let regular = spec
        .containers
        .iter()
        .enumerate()
        .map(|(i, c)| ("containers", i, c));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ("initContainers", i, c));
    for (list, index, c) in regular.chain(init) {
        out.push(ContainerView {
            name: &c.name,
            list,
            index,
            image: c.image.as_deref(),
            command: c.command.as_ref(),
            args: c.args.as_ref(),
            sc: c.security_context.as_ref(),
            ports: c.ports.as_ref(),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
            env: c.env.as_ref(),
            resources: c.resources.as_ref(),
        });
    }
    for (index, c) in spec.ephemeral_containers.iter().flatten().enumerate() {
        out.push(ContainerView {
            name: &c.name,
            list: "ephemeralContainers",
            index,
            image: c.image.as_deref(),
            command: c.command.as_ref(),
            args: c.args.as_ref(),
            sc: c.security_context.as_ref(),
            ports: c.ports.as_ref(),
            probes: [
                ("livenessProbe", c.liveness_probe.as_ref()),
                ("readinessProbe", c.readiness_probe.as_ref()),
                ("startupProbe", c.startup_probe.as_ref()),
            ],
            lifecycle: c.lifecycle.as_ref(),
            env: c.env.as_ref(),
            resources: c.resources.as_ref(),
        });
    }
    out
}
