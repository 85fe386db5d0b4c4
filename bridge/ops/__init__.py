"""Running it safely: private files and telemetry off first, allowed hosts only, the disk's floor, held stop
signals, metrics and health, the control socket and `confide doctor`.
"""
