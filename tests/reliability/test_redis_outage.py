"""Redis (the Feast online store) goes away in the middle of ``materialize``: one clear error line, every
entity holds either its old or its new values (never a mix, never older), and the retry leaves the store
exactly as an uninterrupted run does (docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from tests.conftest import run_cli
from tests.integration._servers.redis import RedisServer
from tests.reliability._kill import pause_at
from tests.reliability.conftest import ERROR

Hashes = dict[bytes, dict[bytes, bytes]]


def _hashes(server: RedisServer) -> Hashes:
    client = server.client()
    try:
        return {key: dict(client.hgetall(key)) for key in client.scan_iter(count=1000)}  # type: ignore[arg-type]
    finally:
        client.close()


def _flush(server: RedisServer) -> None:
    client = server.client()
    client.flushall()
    client.close()


def _shutdown_saving(server: RedisServer) -> None:
    """SHUTDOWN SAVE: the server writes its data to disk and exits (the restart loads it back)."""
    client = server.client()
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closed the connection: that is the shutdown
    finally:
        client.close()
    assert server.proc is not None
    server.proc.wait(timeout=30)
    server.proc = None


def test_materialize_fails_clearly_and_its_retry_equals_an_uninterrupted_run(
    pipeline_root: Any, tmp_path: Path
) -> None:
    root = pipeline_root.copy_to(tmp_path / "data")
    server = RedisServer(tmp_path / "redis").start()
    try:
        env = {
            **root.env,
            "FLYWHEEL_FEAST_ENV": "redis",
            "FLYWHEEL_FEAST_DIR": str(tmp_path / "feast-redis"),
            "FLYWHEEL_REDIS_CONNECTION": server.connection,
        }
        run_cli("feature-apply", env=env)
        old_day, new_day = "2024-04-01", "2024-04-02"
        argv = ["materialize", "--start", new_day, "--batch-rows", "10", "--no-dependents"]

        # the uninterrupted reference: the old day, then the new one
        run_cli("materialize", "--start", old_day, "--no-dependents", env=env)
        old = _hashes(server)
        reference = run_cli(*argv, env=env)
        new = _hashes(server)
        changed = {k for k in new if old.get(k) != new[k]}
        assert len(changed) > 20 and reference["rows"] > 20

        _flush(server)
        run_cli("materialize", "--start", old_day, "--no-dependents", env=env)
        assert _hashes(server) == old
        paused = pause_at("online-batch:2", argv, env)  # two batches of 10 entities written
        _shutdown_saving(server)
        code, out, err = paused.resume()

        assert code == 1 and out == "", err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        errors = [line.removeprefix(ERROR) for line in err.splitlines() if line.startswith(ERROR)]
        assert len(errors) == 1, err[-3000:]
        assert errors[0].startswith(
            f"Redis online store {server.connection} unreachable while writing feature view "
        )
        assert errors[0].endswith(
            "entities already written hold the new values, the others the old ones: "
            "re-run materialize once the server is back"
        )

        server.start()  # loads what SHUTDOWN SAVE wrote; a new port
        env["FLYWHEEL_REDIS_CONNECTION"] = server.connection
        mid = _hashes(server)
        # per entity the old values or the new ones, whole; the 20 entities of the written batches new
        assert set(mid) == set(old) | {k for k in mid if mid[k] == new.get(k)}
        assert all(mid[k] in (old.get(k), new[k]) for k in mid)
        assert set(mid) <= set(new)
        now_new = {k for k in changed if mid.get(k) == new[k]}
        assert len(now_new) == 20, len(now_new)
        assert changed - now_new  # the rest was left as it was: the interruption did happen mid-way

        retry = run_cli(*argv, env=env)
        assert _hashes(server) == new
        assert [(v["view"], v["rows_read"]) for v in retry["views"]] == [
            (v["view"], v["rows_read"]) for v in reference["views"]
        ]
    finally:
        server.stop()
