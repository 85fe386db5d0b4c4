"""Export a local sentence-transformers model to ONNX, once, at install time (scripts/install.sh runs it).

    .venv/bin/python -m bridge.models.onnx_export [--model DIR] [--out FILE]

Without arguments: the packaged MiniLM, written where `LocalEmbedder` looks for it. The export is checked
against sentence-transformers on sample texts (short, long, past the length limit) before it is moved into
place; a failed check leaves nothing behind (Confide would keep encoding with sentence-transformers, and
scripts/install.sh stops, so that an install never silently loses the torch-free encoder).
Needs torch, transformers and the `onnx` package; Confide at run time needs none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

import bridge  # noqa: F401  (telemetry and hub access off before transformers is imported)
from bridge.models.embedder import packaged_model_path
from bridge.models.encoders import OnnxEncoder, SentenceTransformerEncoder, onnx_file_for

SAMPLES = [
    "yes, the 14th!",
    "Anna: The wifi password at the cabin is blue-otter-42.",
    "Subject: Ferry\nThe ferry leaves at 7:40 from pier 3; bring the tickets. " * 3,
    "word " * 600,  # past the 256-token limit: truncated the same way
    "",
]
TOLERANCE = 1e-4


def export(model_dir: Path, out: Path) -> float:
    """Write the ONNX file and return the largest difference to sentence-transformers on the samples."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    example = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    partial = out.with_name(out.name + ".part")
    out.parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")  # the tracer's notes on Python control flow: the check below is what counts
    torch.onnx.export(
        Hidden(),
        (example, example, torch.zeros_like(example)),
        str(partial),
        input_names=names,
        output_names=["last_hidden_state"],
        dynamic_axes=axes,
        opset_version=17,
        dynamo=False,
    )
    try:
        exported = OnnxEncoder(model_dir, partial).encode(SAMPLES)
        reference = SentenceTransformerEncoder(model_dir).encode(SAMPLES)
        difference = float(np.abs(exported - reference).max())
        if difference > TOLERANCE:
            raise ValueError(f"the export differs from sentence-transformers by {difference:.2g}")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, out)
    return difference


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="sentence-transformers folder (default: the packaged MiniLM)")
    parser.add_argument("--out", type=Path, help="ONNX file to write (default: where Confide looks for it)")
    parser.add_argument("--if-missing", action="store_true", help="do nothing if the file is already there")
    args = parser.parse_args()
    model_dir = args.model or packaged_model_path()
    out = args.out or onnx_file_for(model_dir, packaged=args.model is None)
    if args.if_missing and out.is_file():
        print(f"{out} is there already")
        return 0
    difference = export(model_dir, out)
    print(f"wrote {out} (largest difference to sentence-transformers on the samples: {difference:.1g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
