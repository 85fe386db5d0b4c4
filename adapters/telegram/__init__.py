"""Telegram: the live bot adapter and the importer of Telegram Desktop exports."""
