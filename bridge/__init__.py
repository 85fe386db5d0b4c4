"""Confide's core: messages, durable inbox and outbox, routing, history index, answer pipeline.

Importing the core turns off every dependency's telemetry and hub access first (see bridge.privacy).
"""

from bridge.privacy import lock_down_environment

lock_down_environment()

__version__ = "0.1.0"
