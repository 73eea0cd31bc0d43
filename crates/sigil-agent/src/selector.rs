//! Which policy workloads an attested caller is: every selector a workload sets must match.
//!
//! Owns: matching [`WorkloadFacts`] against the policy's `kubernetes` and `unix` selectors, and
//! explaining a non-match. Must not: attest anything or touch the network. Pure.

use std::fmt;

use sigil_policy::{K8sSelector, UnixSelector, Workload};

use crate::attest::WorkloadFacts;

/// Why a workload's selectors do not match a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    NotInPod,
    Namespace {
        want: String,
        got: String,
    },
    ServiceAccount {
        want: String,
        got: String,
    },
    Label {
        key: String,
        want: String,
        got: Option<String>,
    },
    Uid {
        want: u32,
        got: u32,
    },
    Gid {
        want: u32,
        got: u32,
    },
    Path {
        want: String,
        got: Option<String>,
    },
    Sha256 {
        want: String,
        got: Option<String>,
    },
    NoSelectors,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInPod => f.write_str("needs a Kubernetes pod, caller is not in one"),
            Self::Namespace { want, got } => {
                write!(f, "needs namespace {want}, caller is in {got}")
            }
            Self::ServiceAccount { want, got } => {
                write!(f, "needs service account {want}, caller has {got}")
            }
            Self::Label { key, want, got } => match got {
                Some(g) => write!(f, "needs pod label {key}={want}, caller has {key}={g}"),
                None => write!(f, "needs pod label {key}={want}, caller has no {key} label"),
            },
            Self::Uid { want, got } => write!(f, "needs uid {want}, caller has uid {got}"),
            Self::Gid { want, got } => write!(f, "needs gid {want}, caller has gid {got}"),
            Self::Path { want, got } => match got {
                Some(g) => write!(f, "needs executable {want}, caller runs {g}"),
                None => write!(
                    f,
                    "needs executable {want}, caller's executable is unreadable"
                ),
            },
            Self::Sha256 { want, got } => match got {
                Some(g) => write!(f, "needs executable sha256 {want}, caller's is {g}"),
                None => write!(
                    f,
                    "needs executable sha256 {want}, caller's could not be computed"
                ),
            },
            Self::NoSelectors => f.write_str("has no selectors"),
        }
    }
}

fn match_k8s(s: &K8sSelector, facts: &WorkloadFacts) -> Result<(), Mismatch> {
    let Some(k) = &facts.kubernetes else {
        return Err(Mismatch::NotInPod);
    };
    if k.namespace != s.namespace {
        return Err(Mismatch::Namespace {
            want: s.namespace.clone(),
            got: k.namespace.clone(),
        });
    }
    if k.service_account != s.service_account {
        return Err(Mismatch::ServiceAccount {
            want: s.service_account.clone(),
            got: k.service_account.clone(),
        });
    }
    for (key, want) in &s.pod_labels {
        let got = k.labels.get(key);
        if got != Some(want) {
            return Err(Mismatch::Label {
                key: key.clone(),
                want: want.clone(),
                got: got.cloned(),
            });
        }
    }
    Ok(())
}

fn match_unix(s: &UnixSelector, facts: &WorkloadFacts) -> Result<(), Mismatch> {
    if let Some(want) = s.uid
        && want != facts.uid
    {
        return Err(Mismatch::Uid {
            want,
            got: facts.uid,
        });
    }
    if let Some(want) = s.gid
        && want != facts.gid
    {
        return Err(Mismatch::Gid {
            want,
            got: facts.gid,
        });
    }
    if let Some(want) = &s.path
        && facts.exe_path.as_deref() != Some(want.as_str())
    {
        return Err(Mismatch::Path {
            want: want.clone(),
            got: facts.exe_path.clone(),
        });
    }
    if let Some(want) = &s.sha256
        && facts.sha256.as_ref() != Some(want)
    {
        return Err(Mismatch::Sha256 {
            want: hex::encode(want),
            got: facts.sha256.map(hex::encode),
        });
    }
    Ok(())
}

/// Whether `facts` satisfy every selector `w` sets.
pub fn matches(w: &Workload, facts: &WorkloadFacts) -> Result<(), Mismatch> {
    if w.kubernetes.is_none() && w.unix.is_none() {
        return Err(Mismatch::NoSelectors);
    }
    if let Some(k) = &w.kubernetes {
        match_k8s(k, facts)?;
    }
    if let Some(u) = &w.unix {
        if u.uid.is_none() && u.gid.is_none() && u.path.is_none() && u.sha256.is_none() {
            return Err(Mismatch::NoSelectors);
        }
        match_unix(u, facts)?;
    }
    Ok(())
}

/// The workloads `facts` match, in policy order (the first is the default SVID).
pub fn select<'a>(workloads: &'a [Workload], facts: &WorkloadFacts) -> Vec<&'a Workload> {
    workloads
        .iter()
        .filter(|w| matches(w, facts).is_ok())
        .collect()
}

/// Why no workload matched: each workload with its first failing selector, for the log line
/// that tells an operator why a caller got no identity. At most `limit` entries.
pub fn explain(workloads: &[Workload], facts: &WorkloadFacts, limit: usize) -> String {
    let mut parts: Vec<String> = workloads
        .iter()
        .filter_map(|w| matches(w, facts).err().map(|m| format!("{} {m}", w.name)))
        .take(limit)
        .collect();
    if workloads.len() > limit {
        parts.push(format!("and {} more", workloads.len() - limit));
    }
    if parts.is_empty() {
        "the policy declares no workloads".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::PodFacts;
    use std::collections::BTreeMap;
    use std::path::Path;
    use test_case::test_case;

    fn policy() -> Vec<Workload> {
        let text = r#"
apiVersion: sigil.dev/v1alpha1
kind: Platform
trustDomain: ai.example.org
workloads:
  - name: rag-api
    kubernetes: { namespace: rag, serviceAccount: rag-api, podLabels: { app: rag-api } }
  - name: any-rag
    spiffeId: spiffe://ai.example.org/any-rag
    kubernetes: { namespace: rag, serviceAccount: rag-api }
  - name: model-sync
    unix: { uid: 2000, path: /usr/local/bin/model-sync }
  - name: by-gid
    unix: { gid: 3000 }
  - name: pinned
    unix: { uid: 2000, sha256: "0000000000000000000000000000000000000000000000000000000000000001" }
"#;
        sigil_policy::Policy::parse(text, Path::new("t.yaml"))
            .unwrap()
            .workloads
    }

    fn unix(uid: u32, gid: u32, exe: &str) -> WorkloadFacts {
        WorkloadFacts {
            pid: 10,
            uid,
            gid,
            exe_path: Some(exe.to_owned()),
            sha256: None,
            kubernetes: None,
        }
    }

    fn pod(ns: &str, sa: &str, labels: &[(&str, &str)]) -> WorkloadFacts {
        let mut f = unix(1000, 1000, "/app");
        f.kubernetes = Some(PodFacts {
            namespace: ns.into(),
            pod_name: "p".into(),
            pod_uid: "u".into(),
            service_account: sa.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            node_name: "n".into(),
            container_name: "c".into(),
            image: "i".into(),
            image_id: "i".into(),
        });
        f
    }

    fn names(f: &WorkloadFacts) -> Vec<String> {
        select(&policy(), f)
            .iter()
            .map(|w| w.name.clone())
            .collect()
    }

    #[test_case(pod("rag", "rag-api", &[("app", "rag-api"), ("x", "y")]), &["rag-api", "any-rag"] ; "pod with labels matches both")]
    #[test_case(pod("rag", "rag-api", &[("app", "other")]), &["any-rag"] ; "wrong label")]
    #[test_case(pod("rag", "rag-ingest", &[("app", "rag-api")]), &[] ; "wrong service account")]
    #[test_case(pod("other", "rag-api", &[("app", "rag-api")]), &[] ; "wrong namespace")]
    #[test_case(unix(2000, 1, "/usr/local/bin/model-sync"), &["model-sync"] ; "uid and path")]
    #[test_case(unix(2000, 1, "/usr/bin/python3"), &[] ; "uid right path wrong")]
    #[test_case(unix(2001, 1, "/usr/local/bin/model-sync"), &[] ; "path right uid wrong")]
    #[test_case(unix(5, 3000, "/x"), &["by-gid"] ; "gid only")]
    fn selection(f: WorkloadFacts, want: &[&str]) {
        assert_eq!(names(&f), want);
    }

    #[test]
    fn sha256_must_match_when_set() {
        let mut f = unix(2000, 1, "/bin/x");
        assert!(!names(&f).contains(&"pinned".to_owned()));
        let mut d = [0u8; 32];
        d[31] = 1;
        f.sha256 = Some(d);
        assert!(names(&f).contains(&"pinned".to_owned()));
        d[0] = 9;
        f.sha256 = Some(d);
        assert!(!names(&f).contains(&"pinned".to_owned()));
    }

    #[test]
    fn explanation_names_workload_and_selector() {
        let e = explain(&policy(), &unix(1234, 1, "/usr/bin/python3"), 10);
        assert!(
            e.contains("model-sync needs uid 2000, caller has uid 1234"),
            "{e}"
        );
        assert!(e.contains("rag-api needs a Kubernetes pod"), "{e}");
        let short = explain(&policy(), &unix(1234, 1, "/x"), 2);
        assert!(short.ends_with("and 3 more"), "{short}");
    }
}
