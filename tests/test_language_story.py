"""The newcomer's story beyond English (issue 22), as subprocesses on a fresh data directory with the defaults:
the packaged embedder and its calibrated gate. Two notes, one Italian, one German, imported with `confide import
files`; questions in German, Italian, French and Spanish find the note (across languages too) and ask the model to
answer in the question's language; a question the history cannot answer gets the refusal in its own language.
The model is a local server speaking the OpenAI wire protocol: what language its answer is in is the model's part,
what Confide tells it and says itself is tested here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import cli_env, run_cli
from tests.fakes.openai_server import FakeOpenAI, retrieved_history

ITALIAN = "La password del wifi della baita è pigna-1987.\n"
GERMAN = "Der Ersatzschlüssel liegt unter dem blauen Blumentopf.\n"

FOUND = [
    ("Wo liegt der Ersatzschlüssel?", "German", "Ersatzschlüssel"),
    ("Qual è la password del wifi della baita?", "Italian", "pigna-1987"),
    ("Où est la clé de secours ?", "French", "Ersatzschlüssel"),
    ("¿Cuál es la contraseña del wifi de la cabaña?", "Spanish", "pigna-1987"),
]
NOT_FOUND = [
    ("Wann hat meine Großmutter Geburtstag?", "Geburtstag“ habe ich in deinem Archiv nichts gefunden."),
    ("Quando compie gli anni mia nonna?", "Nel tuo archivio non ho trovato niente su «"),
    ("Quand ma grand-mère fête-t-elle son anniversaire ?", "Je n'ai rien trouvé sur «\u00a0"),
    ("¿Cuándo es el cumpleaños de mi abuela?", "No he encontrado nada sobre «"),
]


@pytest.fixture
async def data(tmp_path: Path) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "baita.txt").write_text(ITALIAN)
    (notes / "schluessel.txt").write_text(GERMAN)
    (tmp_path / "data").mkdir()
    imported = await run_cli(["import", "files", str(notes), "--person", "me"], _env(tmp_path / "data", None))
    assert imported.code == 0 and "Imported 2" in imported.stderr, imported.stderr
    return tmp_path / "data"


def _env(data: Path, llm: FakeOpenAI | None) -> dict[str, str]:
    models = {"main": {"base_url": llm.base_url, "model": llm.model}} if llm else {}
    env = cli_env(data, models=json.dumps(models))
    del env["CONFIDE_RETRIEVAL__MIN_RELEVANCE"]  # the gate as shipped
    return env


@pytest.mark.parametrize(("question", "language", "fact"), FOUND)
async def test_a_question_finds_the_note_and_asks_for_an_answer_in_its_language(
    data: Path, fake_llm: FakeOpenAI, question: str, language: str, fact: str
) -> None:
    chat = await run_cli(["chat"], _env(data, fake_llm), stdin=question + "\n")
    assert chat.code == 0, chat.stderr
    [request] = fake_llm.requests
    assert fact in retrieved_history(request).split("[2]")[0]  # the note is the first excerpt
    assert request["messages"][-1]["content"].endswith(f"Write your reply in {language}.")
    answer, _, sources = chat.stdout.partition("Sources:")
    assert "[1]" in answer and (".txt" in sources), chat.stdout


@pytest.mark.parametrize(("question", "refusal"), NOT_FOUND)
async def test_a_question_the_history_cannot_answer_is_refused_in_its_language(
    data: Path, fake_llm: FakeOpenAI, question: str, refusal: str
) -> None:
    chat = await run_cli(["chat"], _env(data, fake_llm), stdin=question + "\n")
    assert chat.code == 0, chat.stderr
    assert fake_llm.requests == []  # not asked: the gate found nothing relevant
    assert refusal in chat.stdout, chat.stdout
