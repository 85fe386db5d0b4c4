"""The models Confide runs or calls: chat models (OpenAI-compatible, the embedded llama.cpp server),
embedders and their encoders, the transcriber, and the energy each answer costs.
"""
