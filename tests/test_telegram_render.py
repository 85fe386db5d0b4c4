"""Splitting and formatting of Telegram replies, table-tested: boundaries, UTF-16 length, escaping."""

from __future__ import annotations

import pytest

from adapters.telegram.render import preview, split_text, to_html, utf16_len


@pytest.mark.parametrize(
    ("text", "limit", "parts"),
    [
        ("short", 20, ["short"]),
        ("aaaa bbbb\ncccc\n\ndddd eeee", 20, ["aaaa bbbb\ncccc", "dddd eeee"]),  # paragraph over line
        ("aaaa bbbb\ncccc dddd eeee", 20, ["aaaa bbbb", "cccc dddd eeee"]),  # line when no paragraph
        ("One two. Three four five six", 20, ["One two.", "Three four five six"]),  # sentence
        ("alpha beta gamma delta", 12, ["alpha beta", "gamma delta"]),  # word
        ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),  # hard cut
        ("😀" * 6, 5, ["😀😀", "😀😀", "😀😀"]),  # an emoji is two UTF-16 units
    ],
)
def test_split_at_the_most_sensible_boundary(text: str, limit: int, parts: list[str]) -> None:
    assert split_text(text, limit) == parts
    assert all(utf16_len(p) <= limit for p in parts)


def test_split_keeps_every_word_of_a_long_answer() -> None:
    text = "\n".join(f"Line {n}: " + "words and more words. " * (n % 9 + 1) for n in range(400))
    parts = split_text(text, 4096)
    assert len(parts) > 1 and all(utf16_len(p) <= 4096 for p in parts)
    assert " ".join(parts).split() == text.split()


def test_html_escapes_everything_and_bolds_the_sources_heading() -> None:
    assert to_html("1 < 2 & <b>x</b>\n\nSources:\n[1] a > b") == (
        "1 &lt; 2 &amp; &lt;b&gt;x&lt;/b&gt;\n\n<b>Sources:</b>\n[1] a &gt; b"
    )


def test_preview_fits_one_message_and_says_it_continues() -> None:
    assert preview("  growing answer ") == "growing answer"
    long = preview("y" * 5000)
    assert utf16_len(long) == 4096 and long.endswith("…")
