"""Settings and pod pieces of the Kubernetes runner (``FLYWHEEL_RUNNER=kubernetes``, see ``_lib.pod``).

:class:`KubeSettings` reads the ``FLYWHEEL_K8S_*`` variables (the table is in ``docs/dags.md``) when a DAG
file is parsed; a bad value fails the parse with a message naming the variable. Secrets reach pods only
through the Secret named by ``FLYWHEEL_K8S_ENV_SECRET``, never through the pod spec.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from kubernetes.client import models as k8s
from pydantic import Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from _lib.config import PROFILES, Profile
from _lib.kube_env import (
    ENV,
    ENV_PREFIX,
    SECRET_NAME,
    XCOM_ENV,
    MappingEnvSource,
    env_for_pods,
    explain,
    parse_json,
    str_map,
    var_name,
)
from _lib.profiles import ResourceProfile, resource_profile

XCOM_FILE = "/airflow/xcom/return.json"
ML_TASKS_COMMAND = ["ml-tasks"]
BASE_CONTAINER = "base"  # the provider reads logs and the exit code of this container
ON_FINISH_ACTIONS = ("delete_pod", "keep_pod", "delete_succeeded_pod")
DATA_VOLUME = "flywheel-data"
TMP_VOLUME = "tmp"
SHM_VOLUME = "dshm"
#: label values follow the DNS-label rules (step names and profiles already do)
APP_LABELS = {
    "app": "flywheel",
    "app.kubernetes.io/name": "flywheel",
    "app.kubernetes.io/component": "ml-step",
}

#: JSON settings: a comma-separated or JSON value is parsed here, with messages naming the variable
Names = Annotated[tuple[str, ...], NoDecode]
JsonMap = Annotated[dict[str, str] | None, NoDecode]
JsonList = Annotated[list[dict[str, Any]] | None, NoDecode]
_MAPS = ("extra_env", "cpu_requests", "cpu_limits", "cpu_node_selector", "gpu_requests", "gpu_limits",
         "gpu_node_selector")  # fmt: skip


class KubeSettings(BaseSettings):
    """Everything the Kubernetes runner reads from the environment (table: ``docs/dags.md``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, str_strip_whitespace=True, extra="ignore"
    )

    image: str | None = None
    data_root: str | None = Field(None, validation_alias="FLYWHEEL_DATA_ROOT")
    namespace: str = "flywheel"
    service_account: str | None = None
    automount_sa_token: bool = False  # steps never call the Kubernetes API
    image_pull_secrets: Names = ()
    image_pull_policy: str = "IfNotPresent"
    conn_id: str = "kubernetes_default"
    config_file: str | None = None
    in_cluster: bool | None = None
    cluster_context: str | None = None
    data_pvc: str | None = None
    env_secret: str | None = None
    env_configmaps: Names = ()
    extra_env: JsonMap = None
    startup_timeout_seconds: int = Field(600, ge=1)
    schedule_timeout_seconds: int = Field(900, ge=1)
    on_finish: str = "delete_pod"
    deferrable: bool = False
    # uid 0 is refused: runAsNonRoot would stop the pod at start anyway, later and less clearly
    run_as_user: int = Field(10001, ge=1)
    run_as_group: int = Field(10001, ge=1)
    fs_group: int | None = Field(None, ge=1)  # default: run_as_group
    read_only_root_fs: bool = True
    cpu_requests: JsonMap = None
    cpu_limits: JsonMap = None
    cpu_node_selector: JsonMap = None
    cpu_tolerations: JsonList = None
    gpu_requests: JsonMap = None
    gpu_limits: JsonMap = None
    gpu_node_selector: JsonMap = None
    gpu_tolerations: JsonList = None
    gpu_count: int = Field(1, ge=1)
    gpu_shm_size: str = "8Gi"
    #: PriorityClass per profile (the chart creates the gpu one); None: the cluster's default priority
    cpu_priority_class: str | None = None
    gpu_priority_class: str | None = None
    #: the gpu profile's image (torch built for CUDA); None: ``image``
    gpu_image: str | None = None
    #: not ``FLYWHEEL_K8S_*``: the pass-through settings of the whole environment (:meth:`from_env`)
    pod_env: dict[str, str] = Field(default_factory=dict, exclude=True)
    withheld_env: tuple[str, ...] = Field((), exclude=True)
    _profiles: dict[str, ResourceProfile] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubeSettings:
        """Read and check the settings from ``env`` (default: this process's environment).

        Raises:
            ValueError: a bad or missing value, named with its variable.
        """
        token = ENV.set(env)
        try:
            found, withheld = env_for_pods(os.environ if env is None else env)
            return cls(pod_env=found, withheld_env=withheld)
        except ValidationError as exc:
            raise ValueError(explain(exc)) from None
        finally:
            ENV.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = ENV.get()
        return (init_settings, env_settings if env is None else MappingEnvSource(settings_cls, env))

    @field_validator("image_pull_secrets", "env_configmaps", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return tuple(p.strip() for p in value.split(",") if p.strip()) if isinstance(value, str) else value

    @field_validator(*_MAPS, mode="before")
    @classmethod
    def _json_map(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        var = var_name(str(info.field_name))
        found = str_map(parse_json(var, value, dict), var)
        secret = sorted(k for k in found if SECRET_NAME.search(k))
        if info.field_name == "extra_env" and secret:
            raise ValueError(
                f"{var} names secret-looking variables {secret}: put them in the Secret named by"
                f" {ENV_PREFIX}ENV_SECRET (pods read it through envFrom), not in the pod spec"
            )
        return found

    @field_validator("cpu_tolerations", "gpu_tolerations", mode="before")
    @classmethod
    def _json_list(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        var = var_name(str(info.field_name))
        found = parse_json(var, value, list)
        for number, toleration in enumerate(found):
            if not isinstance(toleration, dict):
                raise ValueError(f"{var}[{number}] must be a JSON object, got {toleration!r}")
        return found

    @field_validator("on_finish")
    @classmethod
    def _on_finish(cls, value: str) -> str:
        if value not in ON_FINISH_ACTIONS:
            raise ValueError(f"{ENV_PREFIX}ON_FINISH={value!r} is not one of {list(ON_FINISH_ACTIONS)}")
        return value

    @model_validator(mode="after")
    def _complete(self) -> KubeSettings:
        if self.image is None:
            raise ValueError(
                f"FLYWHEEL_RUNNER=kubernetes needs {ENV_PREFIX}IMAGE, the ml-tasks image with a tag or digest"
                " (e.g. ghcr.io/<org>/flywheel-ml-tasks:<tag>); or unset FLYWHEEL_RUNNER to run locally"
            )
        for var, image in (("IMAGE", self.image), ("GPU_IMAGE", self.gpu_image)):
            if image is None:  # GPU_IMAGE is optional (IMAGE's absence is refused above)
                continue
            last = image.rsplit("/", 1)[-1]
            if any(c.isspace() for c in image) or not (":" in last or "@" in last):
                raise ValueError(
                    f"{ENV_PREFIX}{var}={image!r} has no tag or digest: pin one (…:<tag> or"
                    " …@sha256:<digest>) so every pod of a run runs the same code"
                )
        self._check_data_root()
        if self.fs_group is None:
            self.fs_group = self.run_as_group
        self._profiles = {name: self._profile(name) for name in PROFILES}
        return self

    def _check_data_root(self) -> None:
        root, pvc = self.data_root, self.data_pvc
        if root is None:
            raise ValueError(
                "FLYWHEEL_DATA_ROOT is not set: the kubernetes runner needs it explicitly (an object-store"
                " URI such as s3://bucket/flywheel, or an absolute path on the PVC named by"
                f" {ENV_PREFIX}DATA_PVC)"
            )
        if "://" in root and not root.startswith("file://"):
            if pvc:
                raise ValueError(
                    f"{ENV_PREFIX}DATA_PVC={pvc!r} is set but FLYWHEEL_DATA_ROOT={root!r} is an object-store"
                    " URI: pods read and write the bucket, not a volume; unset one of them"
                )
            return
        if not root.removeprefix("file://").startswith("/"):
            raise ValueError(f"FLYWHEEL_DATA_ROOT={root!r} must be absolute for the kubernetes runner")
        if not pvc:
            raise ValueError(
                f"FLYWHEEL_DATA_ROOT={root!r} is a local path but {ENV_PREFIX}DATA_PVC is not set: a pod's"
                " own filesystem is thrown away with it; name a PersistentVolumeClaim to mount there, or use"
                " an object-store URI"
            )

    def _profile(self, name: str) -> ResourceProfile:
        """The profile ``name`` from its defaults and the ``FLYWHEEL_K8S_<NAME>_*`` overrides."""
        keys = ("requests", "limits", "node_selector", "tolerations")
        overrides = {key: getattr(self, f"{name}_{key}") for key in keys}
        return resource_profile(
            name, overrides, self.gpu_count, self.gpu_shm_size, f"{ENV_PREFIX}{name.upper()}_"
        )

    @property
    def profiles(self) -> dict[str, ResourceProfile]:
        """The ``cpu`` and ``gpu`` resource profiles."""
        return self._profiles

    @property
    def on_finish_action(self) -> str:
        """What the provider does with a finished pod (``FLYWHEEL_K8S_ON_FINISH``)."""
        return self.on_finish

    # -- pod pieces ---------------------------------------------------------------------------------------
    def container_security_context(self) -> k8s.V1SecurityContext:
        """Restricted Pod Security Standard for every container (also the XCom sidecar)."""
        return k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=self.read_only_root_fs,
            run_as_non_root=True,
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        )

    def pod_security_context(self) -> k8s.V1PodSecurityContext:
        """Non-root pod; ``fsGroup`` makes the data PVC writable for the step's uid."""
        return k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=self.run_as_user,
            run_as_group=self.run_as_group,
            fs_group=self.fs_group,
            # a large data PVC is not re-chowned on every pod start
            fs_group_change_policy="OnRootMismatch",
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        )

    def volumes(self, profile: ResourceProfile) -> tuple[list[k8s.V1Volume], list[k8s.V1VolumeMount]]:
        """Volumes and the base container's mounts: data PVC, writable /tmp, /dev/shm for gpu pods."""
        volumes: list[k8s.V1Volume] = []
        mounts: list[k8s.V1VolumeMount] = []
        if self.data_pvc:
            volumes.append(
                k8s.V1Volume(
                    name=DATA_VOLUME,
                    persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=self.data_pvc),
                )
            )
            mounts.append(
                k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=str(self.data_root).removeprefix("file://"))
            )
        if self.read_only_root_fs:
            # torch, matplotlib, mlflow and pyarrow write caches and temp files: give them /tmp only
            volumes.append(k8s.V1Volume(name=TMP_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource()))
            mounts.append(k8s.V1VolumeMount(name=TMP_VOLUME, mount_path="/tmp"))
        if profile.shm_size:
            # DataLoader workers pass batches through shared memory; the runtime's default is 64 MiB
            volumes.append(
                k8s.V1Volume(
                    name=SHM_VOLUME,
                    empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=profile.shm_size),
                )
            )
            mounts.append(k8s.V1VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm"))
        return volumes, mounts

    def env_vars(self) -> dict[str, str]:
        """The pod's env: pass-through settings, the XCom file, and writable cache dirs."""
        env = {**self.pod_env, **(self.extra_env or {}), XCOM_ENV: XCOM_FILE}
        if self.read_only_root_fs:
            # the image's HOME may be read-only or absent for a uid picked by the cluster
            env.setdefault("HOME", "/tmp")
            env.setdefault("TMPDIR", "/tmp")
            env.setdefault("XDG_CACHE_HOME", "/tmp/.cache")
            env.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")
        return env

    def env_from(self) -> list[k8s.V1EnvFromSource]:
        """Secret keys as env vars (credentials, tokens); never copied into the pod spec."""
        if not self.env_secret:
            return []
        return [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=self.env_secret))]

    def pod_kwargs(self, step: str, profile: Profile) -> dict[str, Any]:
        """KubernetesPodOperator arguments for ``step`` on ``profile`` (everything but the argv)."""
        resources = self.profiles[profile]
        volumes, mounts = self.volumes(resources)
        security = self.container_security_context()
        return {
            "kubernetes_conn_id": self.conn_id,
            "config_file": self.config_file,
            "in_cluster": self.in_cluster,
            "cluster_context": self.cluster_context,
            "namespace": self.namespace,
            "image": self.gpu_image if profile == "gpu" and self.gpu_image else self.image,
            "image_pull_policy": self.image_pull_policy,
            "image_pull_secrets": [k8s.V1LocalObjectReference(name=n) for n in self.image_pull_secrets],
            "service_account_name": self.service_account,
            "automount_service_account_token": self.automount_sa_token,
            "cmds": list(ML_TASKS_COMMAND),
            "env_vars": self.env_vars(),
            "env_from": self.env_from(),
            "configmaps": list(self.env_configmaps),
            "container_resources": resources.resources(),
            "node_selector": dict(resources.node_selector),
            "priority_class_name": getattr(self, f"{profile}_priority_class"),
            "tolerations": resources.k8s_tolerations(),
            "volumes": volumes,
            "volume_mounts": mounts,
            "security_context": self.pod_security_context(),
            "container_security_context": security,
            "xcom_sidecar_container_security_context": security,
            "labels": {**APP_LABELS, "step": step, "profile": profile},
            "random_name_suffix": True,
            # Airflow 3.3: `durable` supersedes the deprecated reattach_on_restart (same attribute after
            # init); a restarted worker reattaches to the running pod instead of starting a duplicate
            "durable": True,
            "startup_timeout_seconds": self.startup_timeout_seconds,
            "schedule_timeout_seconds": self.schedule_timeout_seconds,
            "on_finish_action": self.on_finish,
            "deferrable": self.deferrable,
            "do_xcom_push": True,
            "get_logs": True,
            "log_events_on_failure": True,
            "base_container_name": BASE_CONTAINER,
        }
