"""The email subject convention, from the command table: "compare A B" with configured models or "[compare] A B",
and "import" (the attachments are the input)."""

from __future__ import annotations

import pytest

from adapters.email.adapter import subject_command

MODELS = {"qwen", "mistral"}


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        ("compare qwen mistral", "When is the dinner?\n\nThanks", "/compare qwen mistral When is the dinner? Thanks"),
        ("Compare qwen mistral: when is the dinner?", "", "/compare qwen mistral when is the dinner?"),
        ("compare qwen mistral:when?", "", "/compare qwen mistral when?"),
        ("compare qwen mistral", "", "/compare qwen mistral"),  # the last question of the thread
        ("[compare] qwen gpt9", "hi?", "/compare qwen gpt9 hi?"),  # explicit: the core names the models
        ("[compare] qwen", "hi?", "/compare qwen"),  # explicit: the core answers with the usage
        ("Compare the two offers", "Which plumber was cheaper?", None),  # an ordinary subject
        ("compare qwen", "x", None),
        ("compare qwenmistral", "x", None),
        ("comparison qwen mistral", "x", None),
        ("Dinner", "compare qwen mistral", None),
        ("[help]", "", None),  # only the table's entries with a mail rule
    ],
)
def test_compare_subject(subject: str, body: str, expected: str | None) -> None:
    command = subject_command(subject, body, MODELS)
    assert (command[0] if command else None) == expected
    assert command is None or command[1] is False


@pytest.mark.parametrize(
    ("subject", "imports"),
    [("import", True), ("[import] chats", True), ("[import chats", True), ("Import: notes.md", True),
     ("important question", False), ("imports", False), ("what did I import?", False)],
)  # fmt: skip
def test_import_subject(subject: str, imports: bool) -> None:
    assert subject_command(subject, "Please import these.", MODELS) == (("/import", True) if imports else None)
