"""Check what the schemas cannot in the rendered Kubernetes manifests: how their objects fit together.

python .ci/manifests.py API.yaml MIGRATE.yaml   the output of `kubectl kustomize` for deploy/kubernetes
                                                and deploy/kubernetes/migrate; exit 1 if a check fails
"""

import sys
from typing import Any

import yaml  # type: ignore[import-untyped]

# UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN, which the runtime image sets (backend/Dockerfile).
GRACEFUL_SHUTDOWN = 15
PROBES = {"readinessProbe": "/health", "livenessProbe": "/health/live", "startupProbe": "/health/live"}


def main(paths: list[str]) -> int:
    # One object of each kind: the Deployment, its Service and budget, and the migration Job.
    objects: dict[str, Any] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            objects.update((o["kind"], o) for o in yaml.safe_load_all(f) if o)
    api_pod, job_pod = objects["Deployment"]["spec"]["template"], objects["Job"]["spec"]["template"]
    api, job = api_pod["spec"]["containers"][0], job_pod["spec"]["containers"][0]
    ports = {p["name"] for p in api["ports"]}

    def api_only(selector: dict[str, str]) -> bool:
        def selects(pod: Any) -> bool:
            labels: dict[str, str] = pod["metadata"]["labels"]
            return selector.items() <= labels.items()

        return selects(api_pod) and not selects(job_pod)

    def writable_tmp(pod: Any) -> bool:
        empty_dirs = {v["name"] for v in pod["spec"]["volumes"] if "emptyDir" in v}
        mounts = pod["spec"]["containers"][0]["volumeMounts"]
        # A path in the pod, not a temporary file of this script's.
        return any(m["mountPath"] == "/tmp" and m["name"] in empty_dirs for m in mounts)  # noqa: S108

    sleep, seconds = api["lifecycle"]["preStop"]["exec"]["command"]
    service = objects["Service"]["spec"]
    checks = {
        "probes: readiness /health, liveness and startup /health/live, on a port the container names": all(
            api[probe]["httpGet"]["path"] == path and api[probe]["httpGet"]["port"] in ports
            for probe, path in PROBES.items()
        ),
        f"terminationGracePeriodSeconds > the preStop sleep + {GRACEFUL_SHUTDOWN} s of graceful shutdown": (
            sleep == "sleep" and api_pod["spec"]["terminationGracePeriodSeconds"] > int(seconds) + GRACEFUL_SHUTDOWN
        ),
        "the Service: to a port the container names, on the API's pods only": (
            api_only(service["selector"]) and all(p["targetPort"] in ports for p in service["ports"])
        ),
        "the disruption budget: the API's pods only": api_only(
            objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
        ),
        "the Job: the Deployment's image, DATABASE_URL and security contexts": (
            job["image"] == api["image"]
            and [e for e in job["env"] if e["name"] == "DATABASE_URL"]
            == [e for e in api["env"] if e["name"] == "DATABASE_URL"]
            and job_pod["spec"]["securityContext"] == api_pod["spec"]["securityContext"]
            and job["securityContext"] == api["securityContext"]
        ),
        "a read-only root filesystem, with an emptyDir at /tmp": all(
            pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] and writable_tmp(pod)
            for pod in (api_pod, job_pod)
        ),
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
