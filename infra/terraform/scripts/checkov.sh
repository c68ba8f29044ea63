#!/usr/bin/env bash
# Static security scan of infra/terraform with checkov, in its own virtual environment (checkov pins an
# old `packaging` that must not enter the project's .venv). Writes infra/terraform/checkov-summary.json
# (committed: counts, failed and skipped checks with their reasons, a digest of the scanned .tf files)
# and the full JSON report to $venv/checkov-results.json; tests/test_terraform.py reads the summary.
#   infra/terraform/scripts/checkov.sh            create the venv if needed, scan, write the results
#   CHECKOV_VENV=/path infra/terraform/scripts/checkov.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
terraform_dir="$(dirname "$here")"
repo="$(cd "$terraform_dir/../.." && pwd)"
venv="${CHECKOV_VENV:-$repo/.venv-checkov}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/checkov" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "checkov>=3.2,<4"
fi

results="$venv/checkov-results.json"
# --download-external-modules false: every module is local. Exit code 1 means failed checks; the
# summary below is what the test judges, so the scan's own exit code is kept, not fatal here.
set +e
BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --directory "$terraform_dir" --framework terraform --compact --skip-download \
  --download-external-modules false --output json --skip-path scripts > "$results"
status=$?
set -e
"$venv/bin/python" - "$results" "$terraform_dir/checkov-summary.json" "$("$venv/bin/checkov" --version)" \
  "$terraform_dir" <<'PY'
import hashlib
import json
import sys
from pathlib import Path

results_path, summary_path, version, root = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])


def tree_sha256(root):
    """sha256 over the relative paths and bytes of every .tf file (tests/test_terraform.py computes it too)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*.tf") if ".terraform" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()



with open(results_path) as handle:
    data = json.load(handle)
reports = data if isinstance(data, list) else [data]
summary = {"checkov_version": version.strip(), "tf_sha256": tree_sha256(root), "passed": 0, "failed": 0, "skipped": 0, "failed_checks": [],
           "skipped_checks": []}
for report in reports:
    counts = report.get("summary", {})
    summary["passed"] += counts.get("passed", 0)
    summary["failed"] += counts.get("failed", 0)
    summary["skipped"] += counts.get("skipped", 0)
    results = report.get("results", {})
    for check in results.get("failed_checks", []):
        summary["failed_checks"].append({"id": check["check_id"], "resource": check["resource"],
                                         "file": check["file_path"]})
    for check in results.get("skipped_checks", []):
        summary["skipped_checks"].append({"id": check["check_id"], "resource": check["resource"],
                                          "reason": (check.get("check_result") or {}).get("suppress_comment", "")})
summary["failed_checks"].sort(key=lambda c: (c["file"], c["resource"], c["id"]))
summary["skipped_checks"].sort(key=lambda c: (c["resource"], c["id"]))
with open(summary_path, "w") as handle:
    json.dump(summary, handle, indent=2, sort_keys=True)
    handle.write("\n")
print(f"checkov {summary['checkov_version']}: {summary['passed']} passed, {summary['failed']} failed, "
      f"{summary['skipped']} skipped")
PY
exit 0
