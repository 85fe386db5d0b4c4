"""Email: the SMTP and IMAP adapters, and the mbox/Maildir importers."""
