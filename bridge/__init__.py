"""Confide's core: messages, durable inbox and outbox, routing, history index, answer pipeline.

Importing the core turns off every dependency's telemetry and hub access first (see bridge.ops.lockdown); it imports
nothing heavy, so that the `confide` executable holds its stop signals from its first instant (bridge/launch.py).
"""

from bridge.ops.lockdown import lock_down_environment

lock_down_environment()

__version__ = "0.1.0"
