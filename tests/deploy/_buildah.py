"""Run commands inside the locally built images with buildah (no Docker engine, no cluster here).

``buildah from`` makes a working container of an image; :meth:`Container.run` runs one command in it with
chroot isolation, as the given user, with host folders bind-mounted. ``read_only=True`` remounts every
top-level folder of the container's root read-only except ``/etc`` and ``/run`` (buildah itself writes
its hosts/resolv.conf and .containerenv there; a non-root user cannot write them anyway) and the mounts:
the closest buildah 1.28 comes to Kubernetes' ``readOnlyRootFilesystem`` (whole-root read-only makes its
own cleanup crash after the command).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

STORAGE_DRIVER = os.environ.get("FLYWHEEL_BUILDAH_STORAGE_DRIVER", "vfs")
ML_TASKS_IMAGE = os.environ.get("FLYWHEEL_ML_TASKS_IMAGE", "localhost/flywheel-ml-tasks:ci")
AIRFLOW_IMAGE = os.environ.get("FLYWHEEL_AIRFLOW_IMAGE", "localhost/flywheel-airflow:ci")
#: left writable in read-only mode: buildah's own mounts, the kernel's, and /tmp (an emptyDir in pods)
_WRITABLE = {"etc", "run", "tmp", "dev", "proc", "sys"}


def buildah(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``buildah --storage-driver <vfs> ARGS`` (the storage the build script uses)."""
    return subprocess.run(
        ["buildah", "--storage-driver", STORAGE_DRIVER, *args],
        capture_output=True, text=True, check=check, timeout=timeout,
    )  # fmt: skip


def missing_reason(image: str) -> str | None:
    """Why ``image`` cannot be run here, or None."""
    if shutil.which("buildah") is None:
        return "buildah is not installed (as root: apt-get install -y buildah debootstrap)"
    if os.geteuid() != 0:
        return "buildah runs images rootful here: needs root"
    if buildah("inspect", "--type", "image", image, check=False).returncode != 0:
        return f"image {image} is not built: run `make images`"
    return None


class Container:
    """A working container of an image."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self,
        argv: Sequence[str],
        *,
        user: str,
        volumes: Mapping[Path, str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container as ``user`` (uid:gid); never raises on a non-zero exit."""
        args = ["run", "--isolation", "chroot", "--user", user]
        for host, target in (volumes or {}).items():
            args += ["-v", f"{host}:{target}"]
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        return buildah(*args, self.name, "--", *argv, check=False, timeout=timeout)


@contextmanager
def container(image: str, *, read_only: bool = False) -> Iterator[Container]:
    """A working container of ``image``, removed afterwards (its root read-only if asked)."""
    name = buildah("from", "--pull-never", image).stdout.strip().splitlines()[-1]
    mounted: list[Path] = []
    try:
        if read_only:
            root = Path(buildah("mount", name).stdout.strip())
            for folder in sorted(root.iterdir()):
                if folder.name in _WRITABLE or folder.is_symlink() or not folder.is_dir():
                    continue
                subprocess.run(["mount", "--bind", folder, folder], check=True)
                mounted.append(folder)
                subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
        yield Container(name)
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", folder], check=False)
        buildah("rm", name, check=False)
