"""Known vulnerabilities of the pinned dependencies (pip-audit over requirements.lock), reported in CI.

Policy: a vulnerability with a fixed version FAILS (exit 1): bumping the pin is the remedy and the lock is
ours. One without a fix yet is reported and does not fail (nothing to bump; listed on every run). When
the vulnerability service cannot be reached, every dependency comes back skipped: that is reported as
NOT AUDITED, and fails only with ``FLYWHEEL_AUDIT_REQUIRED=1`` (a CI runner with internet access).
Accepted findings are listed, with the reason, in ``AUDIT_IGNORE`` below (each becomes ``--ignore-vuln``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: vulnerability id -> why it is accepted (reviewed; remove when the pin moves past it)
AUDIT_IGNORE: dict[str, str] = {}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        cmd = [
            str(REPO / ".venv" / "bin" / "pip-audit"),
            "--requirement", str(REPO / "requirements.lock"),
            "--no-deps", "--disable-pip",  # the lock is complete and pinned: audit exactly it, no resolve
            "--progress-spinner", "off", "--format", "json", "--output", str(report),
            *(arg for vuln in AUDIT_IGNORE for arg in ("--ignore-vuln", vuln)),
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not report.exists():
            print(run.stderr[-3000:], file=sys.stderr)
            return 2
        deps = json.loads(report.read_text())["dependencies"]
    skipped = [d for d in deps if d.get("skip_reason")]
    found = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    fixable = [f for f in found if f[2].get("fix_versions")]
    for name, version, vuln in found:
        fix = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"{name}=={version}: {vuln['id']} ({', '.join(vuln.get('aliases', []))}) fixed in: {fix}")
    audited = len(deps) - len(skipped)
    print(
        f"pip-audit: {len(deps)} pinned packages, {audited} audited, {len(skipped)} skipped;"
        f" {len(found)} known vulnerabilities ({len(fixable)} with a fix)"
    )
    if skipped and not audited:
        print(f"NOT AUDITED: the vulnerability service was unreachable ({skipped[0]['skip_reason']})")
        return 1 if os.environ.get("FLYWHEEL_AUDIT_REQUIRED") == "1" else 0
    return 1 if fixable else 0


if __name__ == "__main__":
    sys.exit(main())
