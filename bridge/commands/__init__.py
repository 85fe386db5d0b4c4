"""Chat commands: the one command table, their handlers, /compare's helpers and the charts they draw."""
