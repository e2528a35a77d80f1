"""The Kubernetes runner: ``ml-tasks <step> <argv...>`` as a KubernetesPodOperator pod in the ml-tasks image.

Imported only by :func:`_lib.steps._kubernetes_step` (``FLYWHEEL_RUNNER=kubernetes``): the provider import
costs ~4 s, which the local runner's DAG parse never pays.

The pod runs exactly the local runner's argv (``cmds=["ml-tasks"]``, ``arguments=[step, *argv]``, the same
Jinja templates; elements that render to ``""`` are dropped before the pod is built). The CLI writes its
JSON summary to ``$FLYWHEEL_XCOM_FILE`` (``/airflow/xcom/return.json``), which the provider's sidecar hands
back as the task's XCom; Asset events get the same extra as locally (:func:`_lib.steps.step_event_extra`).

Settings (environment of the dag-processor and workers, read when the DAG file is parsed):

=========================================  ===============================================================
``FLYWHEEL_K8S_IMAGE``                     ml-tasks image with a tag or digest (required)
``FLYWHEEL_K8S_NAMESPACE``                 pod namespace (default ``flywheel``)
``FLYWHEEL_K8S_SERVICE_ACCOUNT``           service account of the pods (default: the namespace's default)
``FLYWHEEL_K8S_AUTOMOUNT_SA_TOKEN``        mount the service-account token (default false: steps never call
                                           the Kubernetes API)
``FLYWHEEL_K8S_IMAGE_PULL_SECRETS``        comma-separated Secret names for the registry
``FLYWHEEL_K8S_IMAGE_PULL_POLICY``         default ``IfNotPresent`` (images are pinned)
``FLYWHEEL_K8S_CONN_ID``                   Airflow connection (default ``kubernetes_default``)
``FLYWHEEL_K8S_CONFIG_FILE``               kubeconfig path; ``FLYWHEEL_K8S_IN_CLUSTER`` true/false;
                                           ``FLYWHEEL_K8S_CLUSTER_CONTEXT``
``FLYWHEEL_K8S_DATA_PVC``                  PVC mounted at ``FLYWHEEL_DATA_ROOT`` when that is a local path
                                           (required then; refused with an object-store URI)
``FLYWHEEL_K8S_ENV_SECRET``                Secret whose keys become env vars (``envFrom``): object-store
                                           credentials, ``MLFLOW_TRACKING_TOKEN``, ``FLYWHEEL_POSTGRES_URI``
``FLYWHEEL_K8S_ENV_CONFIGMAPS``            comma-separated ConfigMaps whose keys become env vars
``FLYWHEEL_K8S_EXTRA_ENV``                 JSON object of more (non-secret) env vars for every pod
``FLYWHEEL_K8S_STARTUP_TIMEOUT_SECONDS``   scheduled -> running, incl. the image pull (default 600)
``FLYWHEEL_K8S_SCHEDULE_TIMEOUT_SECONDS``  pending -> scheduled, e.g. a GPU node scaling up (default 900)
``FLYWHEEL_K8S_ON_FINISH``                 ``delete_pod`` (default), ``keep_pod``, ``delete_succeeded_pod``
``FLYWHEEL_K8S_DEFERRABLE``                wait for the pod in the triggerer (default false)
``FLYWHEEL_K8S_RUN_AS_USER`` / ``_GROUP``  non-root uid/gid (default 10001); ``FLYWHEEL_K8S_FS_GROUP``
``FLYWHEEL_K8S_READ_ONLY_ROOT_FS``         default true (writable emptyDir at /tmp, HOME=/tmp)
``FLYWHEEL_K8S_<PROFILE>_REQUESTS``        JSON, e.g. ``{"cpu": "1", "memory": "4Gi"}`` (PROFILE = CPU|GPU)
``FLYWHEEL_K8S_<PROFILE>_LIMITS``          JSON; memory only by default (no CPU limit: no throttling)
``FLYWHEEL_K8S_<PROFILE>_NODE_SELECTOR``   JSON object; gpu default ``{"nvidia.com/gpu.present": "true"}``
``FLYWHEEL_K8S_<PROFILE>_TOLERATIONS``     JSON list; gpu default tolerates ``nvidia.com/gpu:NoSchedule``
``FLYWHEEL_K8S_GPU_COUNT``                 ``nvidia.com/gpu`` limit of the gpu profile (default 1)
``FLYWHEEL_K8S_GPU_SHM_SIZE``              size of the /dev/shm emptyDir of gpu pods (default 8Gi)
=========================================  ===============================================================

The pod's environment: ``FLYWHEEL_XCOM_FILE``, ``MLFLOW_TRACKING_URI`` and every ``FLYWHEEL_*`` setting of
this environment (the local runner's subprocess inherits them all) except the runner's own
(``FLYWHEEL_RUNNER``, ``FLYWHEEL_K8S_*``) and secret-looking names (tokens, passwords, keys, the postgres
URI): secrets reach pods only through ``FLYWHEEL_K8S_ENV_SECRET``, never through the pod spec.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException
from kubernetes.client import models as k8s

from _lib.steps import PROFILES, Profile, attach_event_extra, step_event_extra

if TYPE_CHECKING:
    from airflow.sdk import XComArg
    from airflow.sdk.definitions.mappedoperator import MappedOperator

log = logging.getLogger(__name__)

ENV_PREFIX = "FLYWHEEL_K8S_"
XCOM_FILE = "/airflow/xcom/return.json"
XCOM_ENV = "FLYWHEEL_XCOM_FILE"  # ml_tasks/jsonout.py writes the summary there when set
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

#: settings the pod never gets through its spec (they would be readable by anyone who can read pods)
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL|PRIVATE|_KEY($|_)|POSTGRES_URI|DSN")
#: DAG/runner settings of this environment that mean nothing inside a pod
_NOT_FOR_PODS = ("FLYWHEEL_RUNNER", ENV_PREFIX, XCOM_ENV)

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


# -- settings ---------------------------------------------------------------------------------------------
def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _env(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be >= {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    raw = _env(env, name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (true/false)")


def _json(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    raw = _env(env, name)
    if raw is None:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is not valid JSON ({exc}): {raw[:200]!r}") from None
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a JSON {kind.__name__}, got {type(value).__name__}: {raw[:200]!r}")
    return value


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())


def _str_map(value: Mapping[str, Any], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise ValueError(f"{what}[{key!r}] must be a string or number, got {item!r}")
        out[str(key)] = str(item)
    return out


@dataclass(frozen=True)
class ResourceProfile:
    """Requests, limits and placement of one resource profile (``cpu`` or ``gpu``)."""

    name: str
    requests: dict[str, str]
    limits: dict[str, str]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    shm_size: str | None = None

    @classmethod
    def from_env(cls, name: str, env: Mapping[str, str]) -> ResourceProfile:
        """The profile ``name`` from its defaults and the ``FLYWHEEL_K8S_<NAME>_*`` overrides."""
        defaults = DEFAULT_PROFILES[name]
        prefix = f"{ENV_PREFIX}{name.upper()}_"
        requests = _str_map(_json(env, prefix + "REQUESTS", defaults["requests"], dict), prefix + "REQUESTS")
        limits = _str_map(_json(env, prefix + "LIMITS", defaults["limits"], dict), prefix + "LIMITS")
        selector = _str_map(
            _json(env, prefix + "NODE_SELECTOR", defaults["node_selector"], dict), prefix + "NODE_SELECTOR"
        )
        tolerations = _json(env, prefix + "TOLERATIONS", defaults["tolerations"], list)
        for number, toleration in enumerate(tolerations):
            if not isinstance(toleration, dict):
                raise ValueError(f"{prefix}TOLERATIONS[{number}] must be a JSON object, got {toleration!r}")
        shm_size = None
        if name == "gpu":
            # the GPU is the point of the profile: a LIMITS override must not drop it by accident
            count = _int(env, f"{ENV_PREFIX}GPU_COUNT", 1, minimum=1)
            limits = {**limits, GPU_RESOURCE: str(count)}
            shm_size = _env(env, f"{ENV_PREFIX}GPU_SHM_SIZE") or "8Gi"
        elif GPU_RESOURCE in limits or GPU_RESOURCE in requests:
            raise ValueError(f"{prefix}LIMITS/REQUESTS must not ask for {GPU_RESOURCE}: use the gpu profile")
        return cls(name, requests, limits, selector, [dict(t) for t in tolerations], shm_size)

    def resources(self) -> k8s.V1ResourceRequirements:
        """The container's resource requirements."""
        return k8s.V1ResourceRequirements(requests=dict(self.requests), limits=dict(self.limits))

    def k8s_tolerations(self) -> list[k8s.V1Toleration]:
        """The pod's tolerations as Kubernetes models (keys as in a manifest: ``tolerationSeconds``...)."""
        snake = {"tolerationSeconds": "toleration_seconds"}
        return [k8s.V1Toleration(**{snake.get(k, k): v for k, v in t.items()}) for t in self.tolerations]


def _pod_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The env every pod gets, and the names of secret-looking settings left out of it."""
    passed: dict[str, str] = {}
    withheld: list[str] = []
    for name in sorted(env):
        if not name.startswith("FLYWHEEL_") or name.startswith(_NOT_FOR_PODS):
            continue
        if _SECRET_NAME.search(name):
            withheld.append(name)
            continue
        passed[name] = env[name]
    if _env(env, "MLFLOW_TRACKING_URI"):
        passed["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    extra = _str_map(_json(env, f"{ENV_PREFIX}EXTRA_ENV", {}, dict), f"{ENV_PREFIX}EXTRA_ENV")
    secret_extra = sorted(k for k in extra if _SECRET_NAME.search(k))
    if secret_extra:
        raise ValueError(
            f"{ENV_PREFIX}EXTRA_ENV names secret-looking variables {secret_extra}: put them in the Secret"
            f" named by {ENV_PREFIX}ENV_SECRET (pods read it through envFrom), not in the pod spec"
        )
    passed.update(extra)
    passed[XCOM_ENV] = XCOM_FILE
    return passed, withheld


def _data_root(env: Mapping[str, str], pvc: str | None) -> str:
    root = _env(env, "FLYWHEEL_DATA_ROOT")
    if root is None:
        raise ValueError(
            "FLYWHEEL_DATA_ROOT is not set: the kubernetes runner needs it explicitly (an object-store URI"
            f" such as s3://bucket/flywheel, or an absolute path on the PVC named by {ENV_PREFIX}DATA_PVC)"
        )
    if "://" in root and not root.startswith("file://"):
        if pvc:
            raise ValueError(
                f"{ENV_PREFIX}DATA_PVC={pvc!r} is set but FLYWHEEL_DATA_ROOT={root!r} is an object-store"
                " URI: pods read and write the bucket, not a volume; unset one of them"
            )
        return root
    path = root.removeprefix("file://")
    if not path.startswith("/"):
        raise ValueError(f"FLYWHEEL_DATA_ROOT={root!r} must be absolute for the kubernetes runner")
    if not pvc:
        raise ValueError(
            f"FLYWHEEL_DATA_ROOT={root!r} is a local path but {ENV_PREFIX}DATA_PVC is not set: a pod's own"
            " filesystem is thrown away with it; name a PersistentVolumeClaim to mount there, or use an"
            " object-store URI"
        )
    return root


def pod_name_prefix(dag_id: str, task_id: str) -> str:
    """Deterministic pod name prefix ``<dag_id>-<task_id>`` as a DNS label (the provider adds a suffix)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", f"{dag_id}-{task_id}".lower()).strip("-")
    # 63 - 9 for the provider's "-xxxxxxxx" random suffix
    return slug[:54].rstrip("-") or "flywheel-step"


@dataclass(frozen=True)
class KubeSettings:
    """Everything the Kubernetes runner reads from the environment (see the module docstring)."""

    image: str
    data_root: str
    namespace: str = "flywheel"
    service_account: str | None = None
    automount_service_account_token: bool = False
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    conn_id: str = "kubernetes_default"
    config_file: str | None = None
    in_cluster: bool | None = None
    cluster_context: str | None = None
    data_pvc: str | None = None
    env_secret: str | None = None
    env_configmaps: tuple[str, ...] = ()
    startup_timeout_seconds: int = 600
    schedule_timeout_seconds: int = 900
    on_finish_action: str = "delete_pod"
    deferrable: bool = False
    run_as_user: int = 10001
    run_as_group: int = 10001
    fs_group: int = 10001
    read_only_root_filesystem: bool = True
    pod_env: dict[str, str] = field(default_factory=dict)
    withheld_env: tuple[str, ...] = ()
    profiles: dict[str, ResourceProfile] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KubeSettings:
        """Read and check the settings; a clear ``ValueError`` names the first bad variable."""
        env = os.environ if env is None else env
        image = _env(env, f"{ENV_PREFIX}IMAGE")
        if image is None:
            raise ValueError(
                f"FLYWHEEL_RUNNER=kubernetes needs {ENV_PREFIX}IMAGE, the ml-tasks image with a tag or digest"
                " (e.g. ghcr.io/<org>/flywheel-ml-tasks:<tag>); or unset FLYWHEEL_RUNNER to run locally"
            )
        last = image.rsplit("/", 1)[-1]
        if any(c.isspace() for c in image) or not (":" in last or "@" in last):
            raise ValueError(
                f"{ENV_PREFIX}IMAGE={image!r} has no tag or digest: pin one (…:<tag> or …@sha256:<digest>)"
                " so every pod of a run runs the same code"
            )
        on_finish = _env(env, f"{ENV_PREFIX}ON_FINISH") or "delete_pod"
        if on_finish not in ON_FINISH_ACTIONS:
            raise ValueError(f"{ENV_PREFIX}ON_FINISH={on_finish!r} is not one of {list(ON_FINISH_ACTIONS)}")
        pvc = _env(env, f"{ENV_PREFIX}DATA_PVC")
        run_as_group = _int(env, f"{ENV_PREFIX}RUN_AS_GROUP", 10001, minimum=1)
        pod_env, withheld = _pod_env(env)
        return cls(
            image=image,
            data_root=_data_root(env, pvc),
            namespace=_env(env, f"{ENV_PREFIX}NAMESPACE") or "flywheel",
            service_account=_env(env, f"{ENV_PREFIX}SERVICE_ACCOUNT"),
            automount_service_account_token=bool(_bool(env, f"{ENV_PREFIX}AUTOMOUNT_SA_TOKEN", False)),
            image_pull_secrets=_names(env, f"{ENV_PREFIX}IMAGE_PULL_SECRETS"),
            image_pull_policy=_env(env, f"{ENV_PREFIX}IMAGE_PULL_POLICY") or "IfNotPresent",
            conn_id=_env(env, f"{ENV_PREFIX}CONN_ID") or "kubernetes_default",
            config_file=_env(env, f"{ENV_PREFIX}CONFIG_FILE"),
            in_cluster=_bool(env, f"{ENV_PREFIX}IN_CLUSTER", None),
            cluster_context=_env(env, f"{ENV_PREFIX}CLUSTER_CONTEXT"),
            data_pvc=pvc,
            env_secret=_env(env, f"{ENV_PREFIX}ENV_SECRET"),
            env_configmaps=_names(env, f"{ENV_PREFIX}ENV_CONFIGMAPS"),
            startup_timeout_seconds=_int(env, f"{ENV_PREFIX}STARTUP_TIMEOUT_SECONDS", 600, minimum=1),
            schedule_timeout_seconds=_int(env, f"{ENV_PREFIX}SCHEDULE_TIMEOUT_SECONDS", 900, minimum=1),
            on_finish_action=on_finish,
            deferrable=bool(_bool(env, f"{ENV_PREFIX}DEFERRABLE", False)),
            # uid 0 is refused: runAsNonRoot would stop the pod at start anyway, later and less clearly
            run_as_user=_int(env, f"{ENV_PREFIX}RUN_AS_USER", 10001, minimum=1),
            run_as_group=run_as_group,
            fs_group=_int(env, f"{ENV_PREFIX}FS_GROUP", run_as_group, minimum=1),
            read_only_root_filesystem=bool(_bool(env, f"{ENV_PREFIX}READ_ONLY_ROOT_FS", True)),
            pod_env=pod_env,
            withheld_env=tuple(withheld),
            profiles={name: ResourceProfile.from_env(name, env) for name in PROFILES},
        )

    # -- pod pieces ---------------------------------------------------------------------------------------
    def container_security_context(self) -> k8s.V1SecurityContext:
        """Restricted Pod Security Standard for every container (also the XCom sidecar)."""
        return k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            read_only_root_filesystem=self.read_only_root_filesystem,
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
                k8s.V1VolumeMount(name=DATA_VOLUME, mount_path=self.data_root.removeprefix("file://"))
            )
        if self.read_only_root_filesystem:
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
        env = dict(self.pod_env)
        if self.read_only_root_filesystem:
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
            "image": self.image,
            "image_pull_policy": self.image_pull_policy,
            "image_pull_secrets": [k8s.V1LocalObjectReference(name=n) for n in self.image_pull_secrets],
            "service_account_name": self.service_account,
            "automount_service_account_token": self.automount_service_account_token,
            "cmds": list(ML_TASKS_COMMAND),
            "env_vars": self.env_vars(),
            "env_from": self.env_from(),
            "configmaps": list(self.env_configmaps),
            "container_resources": resources.resources(),
            "node_selector": dict(resources.node_selector),
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
            "on_finish_action": self.on_finish_action,
            "deferrable": self.deferrable,
            "do_xcom_push": True,
            "get_logs": True,
            "log_events_on_failure": True,
            "base_container_name": BASE_CONTAINER,
        }


# -- the operator ---------------------------------------------------------------------------------------
class MlStepPodOperator(KubernetesPodOperator):
    """``ml-tasks <step> <argv...>`` in a pod; returns the CLI's JSON summary (XCom) like the local runner.

    ``arguments`` is ``[step, *argv]``: the local runner's argv, same templates, and elements that render
    to ``""`` are dropped (optional flags). With Asset outlets, each event's extra is built from the
    summary exactly as locally (:func:`_lib.steps.step_event_extra`).
    """

    template_fields_renderers: ClassVar[dict[str, str]] = {
        **KubernetesPodOperator.template_fields_renderers,
        "arguments": "py",
    }
    ui_color = "#d9e8f5"

    def __init__(self, *, step: str, profile: Profile = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.profile = profile

    def _do_render_template_fields(
        self, parent: Any, template_fields: Any, context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        # Hooked here, not in render_template_fields: a mapped task is rendered through this method of
        # the unmapped operator only (as the provider does for env_vars); both paths pass parent=self.
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self:
            self.arguments = [str(a) for a in self.arguments if str(a) != ""]

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> k8s.V1Pod:
        """The provider's pod, named ``<dag_id>-<task_id>-<random>`` (deterministic prefix)."""
        if not self.name:
            self.name = pod_name_prefix(self.dag_id, self.task_id)
        pod: k8s.V1Pod = super().build_pod_request_obj(context, dry_run=dry_run)
        return pod

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        if not self.deferrable:
            self._emit_events(result, context)
        return result

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        result = super().trigger_reentry(context, event)
        self._emit_events(result, context)
        return result

    def _emit_events(self, result: Any, context: Any) -> None:
        if not self.outlets:
            return
        if not isinstance(result, Mapping):
            # consumers plan their work from the event's interval: an event without it is worse than none
            raise AirflowException(
                f"ml-tasks {self.step}: the pod returned no JSON summary in {XCOM_FILE} ({result!r}), so"
                " the Asset event would not say which data changed"
            )
        attach_event_extra(self.outlets, step_event_extra(self.step, result, context), context)


@functools.cache
def _warn_withheld(names: tuple[str, ...]) -> None:
    # once per parse, not once per step
    if names:
        log.warning(
            "kubernetes runner: %s not passed to pods (secret-looking); pods get secrets from %sENV_SECRET",
            ", ".join(names),
            ENV_PREFIX,
        )


def _with_step(step: str) -> Any:
    def prepend_step(argv: Sequence[str]) -> list[str]:
        return [step, *argv]

    return prepend_step


def pod_step(
    step: str,
    argv: Sequence[str],
    *,
    expand_argv: XComArg | None,
    profile: Profile,
    task_id: str,
    settings: KubeSettings,
    **kwargs: Any,
) -> MlStepPodOperator | MappedOperator:
    """The task :func:`_lib.steps.ml_step` builds on the Kubernetes runner.

    Args:
        step: CLI subcommand.
        argv: arguments after it (Jinja templates; "" elements dropped after rendering).
        expand_argv: an upstream output that is a LIST of argv lists: one pod per argv (mapped).
        profile: ``cpu`` or ``gpu``.
        task_id: the task id.
        settings: the runner's settings (:meth:`KubeSettings.from_env`).
        **kwargs: BaseOperator arguments (outlets, retries, doc_md, ...).
    """
    pod_kwargs = settings.pod_kwargs(step, profile)
    clash = sorted(set(pod_kwargs) & set(kwargs))
    if clash:
        raise TypeError(f"step {step!r}: {clash} are set by the kubernetes runner (_lib.kube), not by DAGs")
    _warn_withheld(settings.withheld_env)
    if expand_argv is not None:
        mapped: MappedOperator = MlStepPodOperator.partial(
            task_id=task_id,
            step=step,
            profile=profile,
            map_index_template="{{ task.arguments[1:] | join(' ') }}",
            **pod_kwargs,
            **kwargs,
        ).expand(arguments=expand_argv.map(_with_step(step)))
        return mapped
    return MlStepPodOperator(
        task_id=task_id, step=step, profile=profile, arguments=[step, *argv], **pod_kwargs, **kwargs
    )
