#!/usr/bin/env bash
# `make check-openapi`: generate a Python client from each published OpenAPI document
# (/openapi.json, /agent/openapi.json) of the running API with openapi-python-client, and drive the
# API with it (scripts/check_openapi.py). The generator lives in .venv-openapi
# (requirements-openapi.txt), never in the app's venv: it pins an older httpx.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${JOBBRIDGE_OPENAPI_VENV:-$ROOT/.venv-openapi}"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.requirements-openapi.sha256"
want="$(sha256sum requirements-openapi.txt | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/openapi-python-client" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  "$VENV/bin/python" -m pip install -q -r requirements-openapi.txt
  echo "$want" >"$stamp"
fi
"${PYTHON:-$ROOT/.venv/bin/python}" scripts/check_openapi.py --generator "$VENV/bin/openapi-python-client"
