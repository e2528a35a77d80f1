"""Resource profiles of the Kubernetes runner: requests, limits and placement of ``cpu`` and ``gpu`` pods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import models as k8s

DEFAULT_PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"memory": "4Gi"},
        "node_selector": {},
        "tolerations": [],
    },
    "gpu": {
        "requests": {"cpu": "4", "memory": "24Gi"},
        "limits": {"memory": "24Gi"},
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ResourceProfile:
    """Requests, limits and placement of one resource profile (``cpu`` or ``gpu``)."""

    name: str
    requests: dict[str, str]
    limits: dict[str, str]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    shm_size: str | None = None

    def resources(self) -> k8s.V1ResourceRequirements:
        """The container's resource requirements."""
        return k8s.V1ResourceRequirements(requests=dict(self.requests), limits=dict(self.limits))

    def k8s_tolerations(self) -> list[k8s.V1Toleration]:
        """The pod's tolerations as Kubernetes models (keys as in a manifest: ``tolerationSeconds``...)."""
        snake = {"tolerationSeconds": "toleration_seconds"}
        return [k8s.V1Toleration(**{snake.get(k, k): v for k, v in t.items()}) for t in self.tolerations]


def resource_profile(
    name: str, overrides: Mapping[str, Any], gpu_count: int, shm_size: str, prefix: str
) -> ResourceProfile:
    """The profile ``name``: its defaults, each replaced by an override that is not None.

    Raises:
        ValueError: a cpu profile that asks for a GPU (``prefix`` names its variables).
    """
    settings = {key: default if overrides.get(key) is None else overrides[key]
                for key, default in DEFAULT_PROFILES[name].items()}  # fmt: skip
    requests, limits = dict(settings["requests"]), dict(settings["limits"])
    gpu_shm = None
    if name == "gpu":
        # the GPU is the point of the profile: a LIMITS override must not drop it by accident
        limits[GPU_RESOURCE] = str(gpu_count)
        gpu_shm = shm_size
    elif GPU_RESOURCE in limits or GPU_RESOURCE in requests:
        raise ValueError(f"{prefix}LIMITS/REQUESTS must not ask for {GPU_RESOURCE}: use the gpu profile")
    tolerations = [dict(t) for t in settings["tolerations"]]
    return ResourceProfile(name, requests, limits, dict(settings["node_selector"]), tolerations, gpu_shm)
