"""Which language Confide replies in (issue 22): the message's own where it can be told, else the person's setting,
else the language they last wrote in there; in the harness (the real assembly, the recording adapter)."""

from __future__ import annotations

from collections.abc import Callable

from bridge.config import PersonSettings
from bridge.history.index import HistoryIndex
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness
from tests.helpers import eventually, model_for

PERSONS = [
    PersonSettings(id="alice", name="Alice", accounts=["telegram:100"], language="it"),
    PersonSettings(id="bob", name="Bob", accounts=["telegram:200"]),
]


async def test_replies_follow_the_message_then_the_setting_then_the_last_language(
    history: HistoryIndex, fake_llm: FakeOpenAI, harness_factory: Callable[..., Harness]
) -> None:
    async with harness_factory({"main": model_for(fake_llm)}, persons=PERSONS) as h:

        async def say(sender: str, text: str) -> str:
            before = len(h.adapter.delivered)
            await h.adapter.send(sender, text, chat_id=sender)
            await eventually(lambda: len(h.adapter.delivered) > before)
            return h.adapter.delivered[-1].text

        assert (await say("100", "/help")).startswith("Rispondo alle domande")  # too short to tell: her setting
        assert (await say("100", "Vergiss das bitte, /reset ist gemeint")).startswith("You asked")  # a question
        assert fake_llm.requests[-1]["messages"][-1]["content"].endswith("Write your reply in German.")
        assert (await say("100", "/reset")).startswith("Fatto")  # her setting again, not the German just written
        assert (await say("200", "/reset")).startswith("Done: this conversation starts afresh")  # no setting: English
        await say("200", "Wo liegt eigentlich der Ersatzschlüssel für die Hütte?")
        assert (await say("200", "/reset")).startswith("Erledigt")  # the language he last wrote in, remembered
