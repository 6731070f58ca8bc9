#!/usr/bin/env bash
# Security checks of template.yaml without an AWS account:
#   checkov over template.yaml (CloudFormation + SAM rules). Zero findings may remain: a finding
#   that does not apply is suppressed in template.yaml itself (the resource's Metadata.checkov.skip,
#   with its reason), where tests/unit/test_template_security.py checks that a reason is given.
# checkov lives in .venv-checkov (requirements-security.txt): its pins clash with aws-sam-cli's.
# Used by `make check-security` and .ci/run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${JOBBRIDGE_CHECKOV_VENV:-$ROOT/.venv-checkov}"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements-security.sha256"
want="$(sha256sum requirements-security.txt | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/checkov" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  "$VENV/bin/python" -m pip install -q -r requirements-security.txt
  echo "$want" >"$stamp"
fi
echo "checkov: $("$VENV/bin/checkov" --version)"

printf '\n==> checkov -f template.yaml\n'
# --skip-download: no guidelines or platform calls (it runs offline).
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$VENV/bin/checkov" -f template.yaml --framework cloudformation --skip-download --output json >"$report" 2>/dev/null || true
"$VENV/bin/python" - "$report" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
data = data[0] if isinstance(data, list) else data
s = data["summary"]
for check in data.get("results", {}).get("failed_checks", []):
    print(f"  FINDING {check['check_id']} {check['resource']} (template.yaml:{check['file_line_range'][0]}): {check['check_name']}")
print(f"checkov: passed {s['passed']}, failed {s['failed']}, suppressed with a reason {s['skipped']}, "
      f"parsing errors {s['parsing_errors']}")
if s["failed"] or s["parsing_errors"] or not s["passed"]:
    print("FAILED: fix the finding, or suppress it in template.yaml with its reason (Metadata.checkov.skip)")
    sys.exit(1)
print("PASSED: checkov template.yaml (0 findings left)")
PY
