"""The languages Confide speaks: which one a text is in, and what that changes (terms, time phrases, replies)."""
