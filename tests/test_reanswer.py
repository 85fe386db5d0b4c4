"""A question that got the labelled fallback (its model was down for longer than the wait) gets the real answer
once the model is back, once, even across a restart: a follow-up reply to the same question, or on a platform
that edits sent messages (Telegram here, against the Bot API server of the tests) the fallback edited into it."""

from __future__ import annotations

from pathlib import Path

from adapters.telegram import build_adapter
from adapters.telegram.settings import TelegramSettings
from bridge.dispatch.reanswer import FOLLOW_UP
from bridge.history.index import HistoryIndex
from bridge.intake.hearing import Hearing
from bridge.models.transcriber import OpenAITranscriber
from tests.fakes.bot_api import FakeTelegram
from tests.fakes.openai_server import Behaviour, FakeOpenAI
from tests.fakes.recording_adapter import RecordingAdapter
from tests.harness import Harness
from tests.helpers import eventually, make_settings, model_for


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
    assert follow_ups[0].text.removeprefix(FOLLOW_UP).startswith("You asked: where is the spare key?")


async def test_on_telegram_the_fallback_message_becomes_the_answer(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(status=503)
    telegram = await FakeTelegram(drafts_supported=False).start()
    chat = 100
    try:
        adapter_settings = TelegramSettings(enabled=True, token=telegram.token, api_base_url=telegram.base_url,
                                            poll_timeout_s=5, edit_interval_s=0.2)  # fmt: skip
        settings = make_settings(tmp_path, {"main": model_for(fake_llm, retries=0)}, model_wait_s=0,
                                 telegram=adapter_settings)  # fmt: skip
        async with Harness(settings, history, build_adapter(settings), reanswer_every_s=0.3) as h:  # type: ignore[arg-type]
            asked = telegram.push_message(chat, "where is the spare key?")["message"]["message_id"]
            await eventually(lambda: any(m.text.startswith("⚠ Model unavailable") for m in telegram.bot_messages(chat)))
            fake_llm.default = Behaviour()
            await eventually(lambda: telegram.bot_messages(chat)[-1].text.startswith(FOLLOW_UP), within_s=20)
            await eventually(lambda: h.models.is_up("main"))
            telegram.push_message(chat, "/help")  # a later message: its reply comes after any second answer
            await eventually(lambda: len(telegram.bot_messages(chat)) >= 2)
    finally:
        await telegram.stop()
    fallback, help_reply = telegram.bot_messages(chat)
    assert fallback.reply_to == asked and help_reply.reply_to != asked
    assert fallback.edits[0].startswith("⚠ Model unavailable")
    assert fallback.text.removeprefix(FOLLOW_UP).startswith("You asked: where is the spare key?")
    assert [e for e in fallback.edits if e.startswith(FOLLOW_UP)] == [fallback.text]  # replaced once


async def test_a_voice_question_that_got_the_fallback_is_answered_from_what_was_heard_once(
    tmp_path: Path, history: HistoryIndex, fake_llm: FakeOpenAI
) -> None:
    fake_llm.default = Behaviour(status=503)  # the chat model is down; the transcription endpoint answers
    telegram = await FakeTelegram(drafts_supported=False).start()
    speech = b"SPEECH:where is the spare key?"
    voice = {"file_id": telegram.add_file("voice.ogg", speech), "file_unique_id": "v1", "duration": 2,
             "mime_type": "audio/ogg", "file_size": len(speech)}  # fmt: skip
    transcriber = {"backend": "openai", "base_url": fake_llm.base_url, "model": fake_llm.model}
    try:
        adapter_settings = TelegramSettings(enabled=True, token=telegram.token, api_base_url=telegram.base_url,
                                            poll_timeout_s=5, edit_interval_s=0.2)  # fmt: skip
        settings = make_settings(tmp_path, {"main": model_for(fake_llm, retries=0)}, model_wait_s=0,
                                 telegram=adapter_settings, transcriber=transcriber)  # fmt: skip
        hearing = Hearing(OpenAITranscriber(settings.transcriber), settings.transcriber.max_audio_bytes)
        async with Harness(settings, history, build_adapter(settings), reanswer_every_s=0.3, hearing=hearing):  # type: ignore[arg-type]
            telegram.push_message(100, voice=voice)
            await eventually(lambda: any(m.text.startswith("🎤") for m in telegram.bot_messages(100)))
            fake_llm.default = Behaviour()
            await eventually(lambda: telegram.bot_messages(100)[-1].text.startswith(FOLLOW_UP), within_s=20)
        await hearing.transcriber.close()
    finally:
        await telegram.stop()
    [answer] = telegram.bot_messages(100)
    assert answer.edits[0].startswith("🎤 “where is the spare key?”\n\n⚠ Model unavailable")
    assert answer.text.startswith(FOLLOW_UP + "🎤 “where is the spare key?”\n\nYou asked: where is the spare key?")
    assert len(fake_llm.transcriptions) == 1, "heard again for the answer owed"
