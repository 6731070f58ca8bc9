#!/usr/bin/env bash
# Check template.yaml without an AWS account and without Docker:
#   1. cfn-lint template.yaml      (CloudFormation + SAM schema and best-practice rules; warnings fail)
#   2. sam validate --lint         (SAM transform + cfn-lint as SAM CLI runs it)
#   3. sam build                   (really builds CoreLayer and every function for python3.12/arm64)
# Tools live in .venv-tools (requirements-tools.txt), never in the app's venv: aws-sam-cli pins its
# own boto3/pydantic. `sam build` needs a Python 3.12 interpreter to match the Lambda runtime.
# Used by `make check-template`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${JOBBRIDGE_TOOLS_VENV:-$ROOT/.venv-tools}"
export SAM_CLI_TELEMETRY=0
# sam validate needs some region; nothing here talks to AWS.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

passed=()
step() { printf '\n==> %s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------------------
step "tools venv: $VENV"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when requirements-tools.txt changed (or the tools are missing).
stamp="$VENV/.requirements-tools.sha256"
want="$(sha256sum requirements-tools.txt | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/sam" || ! -x "$VENV/bin/cfn-lint" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  "$VENV/bin/python" -m pip install -q -r requirements-tools.txt
  echo "$want" >"$stamp"
fi
echo "sam: $("$VENV/bin/sam" --version)"
echo "cfn-lint: $("$VENV/bin/cfn-lint" --version)"

# --- python3.12 for sam build --------------------------------------------------------------------
# A pyenv shim named python3.12 may be on PATH yet fail when 3.12 is not the active version, so a
# candidate counts only if it actually runs and reports 3.12.
is_py312() { [[ -n "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1; }
py312=""
if is_py312 "$(command -v python3.12 || true)"; then
  py312="$(command -v python3.12)"
elif command -v pyenv >/dev/null 2>&1; then
  for cand in "$(pyenv root)"/versions/3.12.*/bin/python3.12; do
    if is_py312 "$cand"; then py312="$cand"; fi   # the glob is sorted: the last is the newest
  done
fi
if [[ -z "$py312" ]]; then
  echo "ERROR: sam build needs Python 3.12 (the Lambda runtime is python3.12) and none was found." >&2
  echo "       Put python3.12 on PATH, or install it with pyenv (pyenv install 3.12)." >&2
  exit 1
fi
# Lambda Builders looks up `python3.12` on PATH: expose exactly that binary, ahead of any shim.
shimdir="$(mktemp -d)"
trap 'rm -rf "$shimdir"' EXIT
ln -s "$py312" "$shimdir/python3.12"
export PATH="$shimdir:$PATH"
echo "python3.12: $py312 ($(python3.12 --version))"

# --- checks ---------------------------------------------------------------------------------------
step "cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml
passed+=("cfn-lint template.yaml (no errors, no warnings)")

step "sam validate --lint"
"$VENV/bin/sam" validate --lint --template-file template.yaml
passed+=("sam validate --lint")

step "sam build --cached"
"$VENV/bin/sam" build --cached --template-file template.yaml
passed+=("sam build --cached (.aws-sam/build)")

printf '\nPASSED:\n'
printf '  - %s\n' "${passed[@]}"
