"""The message's way through: the durable inbox and outbox, the dispatcher that works each chat in order,
the router's pure decision, handling one message, the live reply, and answers owed after a fallback.
"""
