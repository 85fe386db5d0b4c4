"""Every chat command once: the router's known names, /help, Telegram's command menu and mail subjects read it.

Pure data that imports nothing of Confide but its catalog of texts, so the router (a pure function) can use it;
bridge/commands/handlers.py binds a handler to every entry and refuses to load if one is missing, so the lists
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.language.catalog import N_, say

INTRO = N_(
    "I answer questions from your own history: chats, mails and documents you imported.\nJust write your question."
)
COMMANDS_HEADER = N_("Commands:")


@dataclass(frozen=True)
class MailSubject:
    """A mail whose subject starts with "[NAME]" is the command NAME; one starting with the bare word NAME is
    too when the next `models` words are configured models ("Compare the two offers" stays a question)."""

    models: int = 0
    files: bool = False  # the mail's attachments are the input; the subject's other words are not arguments


@dataclass(frozen=True)
class CommandSpec:
    name: str
    help: str  # one line: /help and the Telegram menu
    args: str = ""  # the arguments' synopsis
    streams: bool = False  # its reply grows like an answer's: typing notice, partial edits, model usage
    aliases: tuple[str, ...] = ()
    listed: bool = True  # False: not in /help's list nor the menu; its help is a paragraph of /help of its own
    internal: bool = False  # made by the router, never typed: confirm, cancel, unknown, empty, too_long
    mail: MailSubject | None = None
    # Deletes from or adds to a history: only for a sender the platform proves (IncomingMessage.sender_proven).
    changes_history: bool = False

    def help_line(self) -> str:
        return f"/{self.name} {self.args}".rstrip() + f" – {say(self.help)}"

    def menu_description(self) -> str:
        """In the reply's language (`speaking`), as `help_line` is: a menu per language is this under each."""
        said = say(self.help)
        text = said[:1].upper() + said[1:] + (f": {self.args}" if self.args else "")
        return text[:256]  # Telegram's limit


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec("help", N_("what I can do (this text)"), aliases=("start",)),
    CommandSpec("reset", N_("forget this conversation's memory (your history stays)")),
    CommandSpec("sources", N_("what my last answer was based on")),
    CommandSpec(
        "forget",
        N_("delete from your history (asks for confirmation)"),
        "all | source NAME | since DATE | until DATE | between DATE DATE | last 2h/3d",
        changes_history=True,
    ),
    CommandSpec("model", N_("show or choose the model for this chat"), "[NAME]"),
    CommandSpec(
        "compare",
        N_(
            "models A and B answer the same question side by side, with time and energy "
            "(without a question: your last question here)"
        ),
        "A B [question]",
        streams=True,
        mail=MailSubject(models=2),
    ),
    CommandSpec("usage", N_("your answers, tokens and energy per model and day (default: 7 days)"), "[DAYS]"),
    CommandSpec("share", N_("in a group: let my answers there use your own history too (everyone there reads them)")),
    CommandSpec("unshare", N_("in a group: stop my answers there from using your history (the default)")),
    CommandSpec(
        "import",
        N_(
            "Send me a chat export (WhatsApp .txt/.zip, Telegram result.json, mbox) or a document (.txt, .md, .pdf, "
            ".docx, .html) and I add it to your history."
        ),
        listed=False,
        mail=MailSubject(files=True),
        changes_history=True,
    ),
    CommandSpec(
        "confirm",
        "carry out the action waiting for confirmation (a reply “yes”)",
        internal=True,
        changes_history=True,
    ),
    CommandSpec("cancel", "drop the action waiting for confirmation (a reply “no”)", internal=True),
    CommandSpec("unknown", "a command I do not know", internal=True),
    CommandSpec("empty", "a message without a question (or only my name)", internal=True),
    CommandSpec("too_long", "a message too long to read as a question", internal=True),
    CommandSpec("unproven", "a history-changing command from a sender the platform does not prove", internal=True),
)

_BY_NAME = {s.name: s for s in COMMANDS}
_TYPED = {name: s for s in COMMANDS if not s.internal for name in (s.name, *s.aliases)}


def typed(name: str) -> CommandSpec | None:
    """The command a person means by /NAME (or an alias such as /start); None for an unknown or internal one."""
    return _TYPED.get(name.lower())


def spec(name: str) -> CommandSpec:
    """The entry of this name (KeyError if there is none)."""
    return _BY_NAME[name]


def help_text() -> str:
    """In the reply's language (bridge/language/catalog.py), as every help line is."""
    lines = [f"{say(INTRO)} {say(COMMANDS_HEADER)}", *(s.help_line() for s in COMMANDS if s.listed and not s.internal)]
    return "\n".join(lines + [say(s.help) for s in COMMANDS if not s.listed and not s.internal])


def menu() -> list[tuple[str, str]]:
    """(name, description) of each listed command, for a platform's command menu (Telegram's setMyCommands);
    the descriptions in the reply's language (`speaking`)."""
    return [(s.name, s.menu_description()) for s in COMMANDS if s.listed and not s.internal]
