"""A question that got the labelled fallback (its model was down for longer than the wait) gets the real answer
once the model is back: a follow-up reply to the same question, once, even across a restart."""

from __future__ import annotations

from pathlib import Path

from bridge.history import HistoryIndex
from bridge.reanswer import FOLLOW_UP
from tests.conftest import eventually, make_settings, model_for
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.harness import Harness
from tests.recording_adapter import RecordingAdapter


async def test_a_fallback_is_followed_by_the_real_answer_once_the_model_is_back(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(status=503)
    settings = make_settings(tmp_path, {"main": model_for(fake_llm, retries=0)}, model_wait_s=0)
    adapter = RecordingAdapter()
    async with Harness(settings, history, adapter, reanswer_every_s=0.3) as h:
        question = await adapter.send("100", "where is the spare key?")
        await eventually(lambda: adapter.delivered)
        [fallback] = adapter.delivered
        requests_while_down = len(fake_llm.requests)
    # A restart while the model is still down: the answer stays owed.
    fake_llm.default = Behaviour()
    async with Harness(settings, history, adapter, reanswer_every_s=0.3) as h:
        await eventually(lambda: len(adapter.delivered) >= 2, within_s=20)
        await eventually(lambda: h.models.is_up("main"))
        await adapter.send("100", "/help")  # a later message: its reply comes after any second follow-up
        await eventually(lambda: len(adapter.delivered) >= 3)
    follow_ups = [r for r in adapter.delivered if r.text.startswith(FOLLOW_UP)]
    assert fallback.text.startswith("⚠ Model unavailable") and requests_while_down >= 1
    assert len(follow_ups) == 1 and follow_ups[0].in_reply_to == question.platform_message_id
    assert follow_ups[0].text.removeprefix(FOLLOW_UP).startswith("You asked: where is the spare key? [1]")
