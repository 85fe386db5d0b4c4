"""WhatsApp: the importer of chat exports (.txt or .zip)."""
