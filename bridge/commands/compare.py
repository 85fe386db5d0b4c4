"""/compare A B [question]: two models answer the same question from the same history, side by side.

Its texts are said in the reply's language (bridge/language/catalog.py); the answers' own lines of time and energy
are bridge/state/usage.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.answering.answer import Answer, usage_of
from bridge.language.catalog import N_, say
from bridge.messages import Citation
from bridge.state.chats import Turn

USAGE = N_("Usage: /compare MODEL_A MODEL_B [question]; without a question, your last question in this chat.")
NO_QUESTION = N_(
    "There is no earlier question in this chat to compare on. Write: /compare MODEL_A MODEL_B your question"
)
CONFIGURED = N_("Configured models: {names}.")


class CompareError(ValueError):
    """What is wrong with a /compare request, phrased for the person (in the reply's language)."""


@dataclass(frozen=True)
class CompareRequest:
    models: tuple[str, str]
    question: str | None  # None: the last question of the chat


def parse_compare(args: tuple[str, ...], configured: list[str]) -> CompareRequest:
    names = ", ".join(configured)
    if len(args) < 2:
        raise CompareError(f"{say(USAGE)}\n{say(CONFIGURED, names=names)}")
    unknown = [repr(name) for name in args[:2] if name not in configured]
    if unknown:
        missing = (
            say("There is no model {model}.", model=unknown[0])
            if len(unknown) == 1
            else say("There is no model {first} and {second}.", first=unknown[0], second=unknown[1])
        )
        raise CompareError(f"{missing} {say(CONFIGURED, names=names)}")
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
    raise CompareError(say(NO_QUESTION))


def _last(turns: list[Turn], keep: int) -> list[Turn]:
    return turns[-keep:] if keep > 0 else []


def format_comparison(question: str, answers: list[Answer]) -> str:
    names = [a.model for a in answers]
    if len(names) == 2:
        header = say(
            "Comparing {first} and {second} on: “{question}”", first=names[0], second=names[1], question=question
        )
    else:
        header = say("Comparing {models} on: “{question}”", models=", ".join(names), question=question)
    lines = [header]
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
