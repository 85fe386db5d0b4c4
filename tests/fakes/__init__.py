"""Fake peers for the platforms and services that cannot run here, each a real server on loopback that speaks
the real wire protocol: the Telegram Bot API (bot_api), vLLM's OpenAI-compatible stream (openai_server), a DCGM
exporter's Prometheus metrics (dcgm_exporter)."""
