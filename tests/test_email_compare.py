"""The email subject convention for /compare: "compare A B" with configured models, or "[compare] A B"."""

from __future__ import annotations

import pytest

from adapters.email.adapter import compare_command

MODELS = {"qwen", "mistral"}


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        ("compare qwen mistral", "When is the dinner?\n\nThanks", "/compare qwen mistral When is the dinner? Thanks"),
        ("Compare qwen mistral: when is the dinner?", "", "/compare qwen mistral when is the dinner?"),
        ("compare qwen mistral", "", "/compare qwen mistral"),  # the last question of the thread
        ("[compare] qwen gpt9", "hi?", "/compare qwen gpt9 hi?"),  # explicit: the core names the models
        ("Compare the two offers", "Which plumber was cheaper?", None),  # an ordinary subject
        ("compare qwen", "x", None),
        ("comparison qwen mistral", "x", None),
        ("Dinner", "compare qwen mistral", None),
    ],
)
def test_compare_subject(subject: str, body: str, expected: str | None) -> None:
    assert compare_command(subject, body, MODELS) == expected
