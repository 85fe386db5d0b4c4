"""Platform adapters: each turns platform events into core messages and core replies into platform calls."""
