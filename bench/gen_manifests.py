#!/usr/bin/env python3
"""Generates N Kubernetes workload manifests (deterministic) for bench/audit.sh.

A mix of kinds (Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod) and of hardened and
naive pod specs (privileged, host namespaces/paths, GPU requests, LD_PRELOAD, tags vs digests,
model arguments), written as multi-document YAML files of 100 objects each.

usage: gen_manifests.py OUT_DIR [N]
"""
import hashlib
import os
import random
import sys

KINDS = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"]
NAMESPACES = ["training", "inference", "rag", "vectordb", "storage", "monitoring", "notebooks", "default"]


def digest(s):
    return "sha256:" + hashlib.sha256(s.encode()).hexdigest()


def container(rng, i, j):
    hardened = rng.random() < 0.5
    name = f"c{j}"
    if hardened:
        image = f"registry.ai.example.org/app{i % 50}@{digest(str(i))}"
        sc = ("      securityContext:\n"
              "        allowPrivilegeEscalation: false\n"
              "        readOnlyRootFilesystem: true\n"
              "        capabilities: {drop: [ALL]}\n")
    else:
        image = rng.choice(["nginx:1.27", "vllm/vllm-openai:latest", "python:3.12", "ghcr.io/example/api:main"])
        sc = rng.choice([
            "",
            "      securityContext: {privileged: true}\n",
            "      securityContext: {capabilities: {add: [SYS_ADMIN, NET_ADMIN]}}\n",
            "      securityContext: {runAsUser: 0, allowPrivilegeEscalation: true}\n",
        ])
    env = ""
    r = rng.random()
    if r < 0.1:
        env = "      env:\n      - {name: LD_PRELOAD, value: /opt/lib/libhook.so}\n"
    elif r < 0.2:
        env = "      env:\n      - {name: NVIDIA_VISIBLE_DEVICES, value: all}\n"
    elif r < 0.3:
        env = "      env:\n      - {name: HF_TOKEN, valueFrom: {secretKeyRef: {name: hf, key: token}}}\n"
    res = "      resources:\n        limits: {nvidia.com/gpu: \"1\", memory: 16Gi}\n" if rng.random() < 0.3 else \
          "      resources:\n        requests: {cpu: 100m, memory: 128Mi}\n"
    args = "      args: [\"--model\", \"meta-llama/Llama-3.1-8B-Instruct\", \"--port\", \"8000\"]\n" if rng.random() < 0.2 else ""
    ports = f"      ports:\n      - {{containerPort: {8000 + j}{', hostPort: 80' if rng.random() < 0.05 else ''}}}\n"
    return (f"    - name: {name}\n      image: {image}\n" + args + env + res + ports + sc).replace("\n      ", "\n      ")


def pod_spec(rng, i, indent):
    lines = []
    if rng.random() < 0.5:
        lines.append("securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}")
    if rng.random() < 0.5:
        lines.append("automountServiceAccountToken: false")
    if rng.random() < 0.05:
        lines.append("hostNetwork: true")
    lines.append(f"serviceAccountName: sa{i % 20}")
    text = "".join(f"{l}\n" for l in lines)
    text += "containers:\n"
    for j in range(rng.randint(1, 3)):
        text += container(rng, i, j).replace("    - ", "- ", 1).replace("\n    ", "\n")
    if rng.random() < 0.1:
        text += "volumes:\n- name: dev\n  hostPath: {path: " + rng.choice(["/dev/nvidia0", "/var/run/docker.sock", "/data"]) + "}\n"
    else:
        text += "volumes:\n- name: tmp\n  emptyDir: {}\n"
    pad = " " * indent
    return "".join(pad + l + "\n" for l in text.splitlines())


def manifest(rng, i):
    kind = KINDS[i % len(KINDS)]
    ns = NAMESPACES[i % len(NAMESPACES)]
    api = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
           "Job": "batch/v1", "CronJob": "batch/v1", "Pod": "v1"}[kind]
    head = f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: w{i}\n  namespace: {ns}\n  labels: {{app: w{i % 300}}}\n"
    labels = f"metadata:\n  labels: {{app: w{i % 300}}}\n"
    if kind == "Pod":
        return head + "spec:\n" + pod_spec(rng, i, 2)
    if kind == "CronJob":
        return (head + "spec:\n  schedule: \"0 * * * *\"\n  jobTemplate:\n    spec:\n      template:\n"
                + "".join("        " + l + "\n" for l in labels.splitlines())
                + "        spec:\n          restartPolicy: OnFailure\n" + pod_spec(rng, i, 10))
    extra = "  selector:\n    matchLabels: {app: w%d}\n" % (i % 300) if kind in ("Deployment", "StatefulSet", "DaemonSet") else ""
    restart = "      restartPolicy: Never\n" if kind == "Job" else ""
    return (head + "spec:\n" + extra + "  template:\n"
            + "".join("    " + l + "\n" for l in labels.splitlines())
            + "    spec:\n" + restart + pod_spec(rng, i, 6))


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    os.makedirs(out, exist_ok=True)
    rng = random.Random(42)
    per_file = 100
    for f in range((n + per_file - 1) // per_file):
        docs = [manifest(rng, i) for i in range(f * per_file, min(n, (f + 1) * per_file))]
        with open(os.path.join(out, f"workloads-{f:04d}.yaml"), "w") as fh:
            fh.write("---\n".join(docs))


if __name__ == "__main__":
    main()
