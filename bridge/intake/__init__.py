"""What comes in: the platform plug-in contract and its registry, who is who, voice messages heard as
questions, and what a media-only message says.
"""
