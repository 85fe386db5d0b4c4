"""What each answer cost: tokens, time and energy, kept per person in the state database for /usage.

The lines a person reads (/usage, and each answer's line in /compare) are in the reply's language
(bridge/language/catalog.py); numbers keep one format in every language.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.language.catalog import say
from bridge.models.energy import EnergyUse
from bridge.models.llm import Done
from bridge.state.store import Connection, StateStore


@dataclass(frozen=True)
class AnswerUsage:
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    total_s: float
    energy_wh: float | None
    avg_power_w: float | None

    @classmethod
    def of(cls, done: Done, energy: EnergyUse | None = None) -> AnswerUsage:
        return cls(
            model=done.model,
            prompt_tokens=done.prompt_tokens,
            completion_tokens=done.completion_tokens,
            ttft_s=done.ttft_s,
            total_s=done.total_s,
            energy_wh=energy.wh if energy is not None else None,
            avg_power_w=energy.avg_w if energy is not None else None,
        )

    @property
    def tokens_per_s(self) -> float | None:
        """Generation speed after the first token (the time to first token is shown on its own)."""
        span = self.total_s - (self.ttft_s or 0.0)
        if self.completion_tokens <= 0 or span <= 0:
            return None
        return self.completion_tokens / span

    def describe(self) -> str:
        parts = [
            first_token_text(self.ttft_s),
            say("total {seconds} s", seconds=format(self.total_s, ".2f")),
            say("{count} tokens", count=self.completion_tokens),
            rate_text(self.tokens_per_s),
        ]
        if self.energy_wh is not None:
            parts.append(format_wh(self.energy_wh))
            if self.avg_power_w is not None:
                parts.append(f"{self.avg_power_w:.0f} W")
        return " · ".join(parts)


def format_wh(wh: float) -> str:
    return f"{wh:.4f} Wh" if wh < 10 else f"{wh:.1f} Wh"


# Runs inside the transaction that finishes the message (Inbox.finish): the usage of an answer is kept
# exactly when its reply is queued.
def record(conn: Connection, inbox_id: int, person: str, usage: AnswerUsage, at: float | None = None) -> None:
    when = time.time() if at is None else at
    conn.execute(
        "INSERT INTO usage (inbox_id, person, model, day, prompt_tokens, completion_tokens, energy_wh, ttft_s,"
        " total_s, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            inbox_id,
            person,
            usage.model,
            datetime.fromtimestamp(when, UTC).date().isoformat(),
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.energy_wh,
            usage.ttft_s,
            usage.total_s,
            when,
        ),
    )


@dataclass(frozen=True)
class UsageRow:
    day: str
    model: str
    answers: int
    prompt_tokens: int
    completion_tokens: int
    energy_wh: float | None  # None: no answer of this group was measured
    measured: int


class UsageLog:
    def __init__(self, db: StateStore) -> None:
        self._db = db

    async def summary(self, person: str, days: int, now: datetime | None = None) -> list[UsageRow]:
        since = ((now or datetime.now(UTC)) - timedelta(days=days - 1)).date().isoformat()

        def query(conn: Connection) -> list[UsageRow]:
            rows = conn.execute(
                "SELECT day, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(energy_wh),"
                " COUNT(energy_wh) FROM usage WHERE person=? AND day>=? GROUP BY day, model ORDER BY day, model",
                (person, since),
            ).fetchall()
            return [UsageRow(*tuple(row)) for row in rows]

        return await self._db.run(query)


def first_token_text(ttft_s: float | None) -> str:
    """ "first token 0.42 s" in the reply's language ("first token –" where the stream gave none)."""
    if ttft_s is None:
        return say("first token –")
    return say("first token {seconds} s", seconds=format(ttft_s, ".2f"))


def rate_text(tokens_per_s: float | None) -> str:
    """ "12.3 tokens/s" in the reply's language ("– tokens/s" where it cannot be told)."""
    return say("{rate} tokens/s", rate="–" if tokens_per_s is None else format(tokens_per_s, ".1f"))


def format_summary(rows: list[UsageRow], days: int) -> str:
    if not rows:
        return say("No answers in the last {days} day(s).", days=days)
    lines = [say("Your usage, last {days} day(s) (UTC days):", days=days)]
    for row in rows:
        energy = format_wh(row.energy_wh) if row.energy_wh is not None else say("energy not measured")
        if 0 < row.measured < row.answers:
            energy += " " + say("({measured} of {answers} measured)", measured=row.measured, answers=row.answers)
        # No answer has an empty prompt: 0 means the model server did not report it (llama-cpp-python's stream).
        if row.prompt_tokens:
            tokens_in = say("{count} tokens in", count=row.prompt_tokens)
        else:
            tokens_in = say("tokens in not reported")
        line = say(
            "{day} {model}: {answers} answer(s), {tokens_in}, {count} out, {energy}",
            day=row.day,
            model=row.model,
            answers=row.answers,
            tokens_in=tokens_in,
            count=row.completion_tokens,
            energy=energy,
        )
        lines.append(line)
    total_wh = [r.energy_wh for r in rows if r.energy_wh is not None]
    answers = sum(r.answers for r in rows)
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in rows)
    if total_wh:
        total = say(
            "Total: {answers} answer(s), {tokens} tokens, {energy}.",
            answers=answers,
            tokens=tokens,
            energy=format_wh(sum(total_wh)),
        )
    else:
        total = say("Total: {answers} answer(s), {tokens} tokens.", answers=answers, tokens=tokens)
    lines.append(total)
    lines.append(say("Energy is the GPUs' energy shared among the answers running at once, by tokens: an attribution."))
    return "\n".join(lines)
