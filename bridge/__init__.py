"""Confide's core: messages, durable inbox and outbox, routing, history index, answer pipeline.

Importing the core turns off every dependency's telemetry and hub access first (see bridge.ops.lockdown), and has
freed memory returned to the system (bridge.ops.memory); it imports nothing heavy, so that the `confide` executable
holds its stop signals from its first instant (bridge/launch.py).
"""

from bridge.ops.lockdown import lock_down_environment
from bridge.ops.memory import return_freed_memory

lock_down_environment()
return_freed_memory()

__version__ = "0.1.0"
