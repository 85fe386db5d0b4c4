"""The answer pipeline: what a question names, the group's scopes, retrieval into a prompt of quoted
history, the streamed and cited answer.
"""
