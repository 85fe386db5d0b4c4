"""/compare A B [question]: two models answer the same question from the same history, side by side."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answering.answer import Answer, usage_of
from bridge.messages import Citation
from bridge.state.chats import Turn

USAGE = "Usage: /compare MODEL_A MODEL_B [question]; without a question, your last question in this chat."
NO_QUESTION = "There is no earlier question in this chat to compare on. Write: /compare MODEL_A MODEL_B your question"


class CompareError(ValueError):
    """What is wrong with a /compare request, phrased for the person."""


@dataclass(frozen=True)
class CompareRequest:
    models: tuple[str, str]
    question: str | None  # None: the last question of the chat


def parse_compare(args: tuple[str, ...], configured: list[str]) -> CompareRequest:
    if len(args) < 2:
        raise CompareError(f"{USAGE}\nConfigured models: {', '.join(configured)}.")
    unknown = [name for name in args[:2] if name not in configured]
    if unknown:
        names = " and ".join(repr(n) for n in unknown)
        raise CompareError(f"There is no model {names}. Configured models: {', '.join(configured)}.")
    question = " ".join(args[2:]).strip()
    return CompareRequest((args[0], args[1]), question or None)


def question_and_context(request: CompareRequest, turns: list[Turn], keep: int) -> tuple[str, list[Turn]]:
    """The question to ask and the earlier turns to give with it (at most `keep`).

    Re-asking the last question leaves out that question and its answer, so neither model sees the
    answer it is compared against.
    """
    if request.question is not None:
        return request.question, _last(turns, keep)
    for index in range(len(turns) - 1, -1, -1):
        if turns[index].role == "user":
            return turns[index].text, _last(turns[:index], keep)
    raise CompareError(NO_QUESTION)


def _last(turns: list[Turn], keep: int) -> list[Turn]:
    return turns[-keep:] if keep > 0 else []


def format_comparison(question: str, answers: list[Answer]) -> str:
    lines = [f"Comparing {' and '.join(a.model for a in answers)} on: “{question}”"]
    for answer in answers:
        lines.append(f"\n── {answer.model} ──")
        lines.append(answer.text)
        usage = usage_of(answer)
        if usage is not None:
            lines.append(f"⏱ {usage.describe()}")
    return "\n".join(lines)


def merged_citations(answers: list[Answer]) -> list[Citation]:
    """Both answers number the same excerpts, so their citations merge by number."""
    seen: dict[int, Citation] = {}
    for answer in answers:
        for citation in answer.citations:
            seen.setdefault(citation.number, citation)
    return [seen[n] for n in sorted(seen)]
