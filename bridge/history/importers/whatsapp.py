"""Importer of WhatsApp chat exports: the `.txt` file, or the `.zip` WhatsApp produces (with or without media).

Android writes `31/12/2023, 21:05 - Anna: text` (or `12/31/23, 9:05 PM - ...`), iOS writes
`[31.12.23, 21:05:09] Anna: text`; the date layout follows the phone's locale and is not written down, so the
day/month order is read off the dates themselves (a first field above 12 means day-first).

The text is read in bounded pieces, never whole: a line is kept up to CONFIDE_IMPORTS__MAX_MESSAGE_CHARS, a
message too, and a zip's chat text is inflated up to CONFIDE_IMPORTS__MAX_MEMBER_BYTES; what is cut is reported.

A message that is only media is kept as a description ("sent a photo (IMG-….jpg)") in the export's language where
Confide speaks it, told by the export's own words: its note for the file ("<Media omessi>") or, where that word is
shared by several languages ("<documento omitido>"), its system texts read so far.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from bridge.config import ImportSettings
from bridge.history.importers.archive import Capped, TooBig, Unreadable, member_limit, read_member, refusal
from bridge.history.importers.base import (
    READ_ERRORS,
    SNIFF_BYTES,
    CheckedOnce,
    Occurrences,
    Problem,
    WrongKind,
    cut_problem,
    describe,
    guarded,
    import_limits,
    stable_id,
)
from bridge.intake import media
from bridge.language.catalog import REPLY_LANGUAGES, SOURCE_LANGUAGE
from bridge.messages import HistoryRecord

DATE_ORDERS = ("dmy", "mdy", "ymd")
SNIFF_LINES = 20
LINE_PIECE_CHARS = 1 << 13  # the text is read in pieces this long: a file without line ends is no one line
# A line that may start a message: `_header` reads it; no other line can be one.
_MAY_START = re.compile(r"^[\[\d\u200e\u200f\ufeff].*", re.MULTILINE)
AUDIO_KINDS = ("voice message", "audio file")
MEDIA_NOTE_CHARS = 1000  # "<name> • 3 pages document omitted" and the like are short; longer text is a message
NOTE_CHARS = 64  # a document's note ends its text, and the longest ("documento não revelado") is a third of this
SYSTEM_TEXT_CHARS = 500  # WhatsApp's system texts are a sentence or two; longer text is a message

# Bidi marks: iOS puts U+200E before system texts and attachments, and wraps phone-number names in U+202A..C.
_MARKS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_DATE = r"(?P<date>\d{1,4}[./-]\d{1,2}[./-]\d{1,4})"
# 12-hour clocks: "9:05 PM", "9:05\u202fpm" (narrow no-break space), "9:05 p.m.".
_TIME = r"(?P<time>\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)(?:\s*(?P<ampm>[AaPp]\.?\s?[Mm]\.?))?"
# Chinese, Japanese and Korean 12-hour clocks put the half of the day before the time: "下午9:05", "午後9:05".
_HALF = r"(?:(?P<half>上午|下午|午前|午後|오전|오후)\s?)?"
_PM_HALVES = ("下午", "午後", "오후")
_ANDROID = re.compile(rf"^{_DATE},?\s{_HALF}{_TIME}\s[-–]\s(?P<rest>.*)$")
_IOS = re.compile(rf"^\[{_DATE},?\s{_HALF}{_TIME}\]\s(?P<rest>.*)$")
# iOS before 2017: no brackets, the time ends with a colon ("31/12/2015 21:05:23: Anna: hi").
_IOS_OLD = re.compile(rf"^{_DATE},?\s{_HALF}{_TIME}:\s(?P<rest>.*)$")
_AUTHOR = re.compile(r"^(?P<author>[^\n]{1,100}?): (?P<text>.*)$", re.DOTALL)
# Group events whose text itself holds ": " (a group name in quotes: 'Anna created group "Trip: Lisbon"') and
# would otherwise read as "author: text". Only what comes before the first colon is searched: a name, never a text.
_AUTHORLESS_EVENT = re.compile(
    r"^[^:]{1,100} (?:changed the subject|changed the group description|changed this group's|created group"  # en
    r"|ha(?:t|st) (?:den Betreff|die Gruppe)"  # de: "hat die Gruppe „…“ erstellt", "hat den Betreff von „…“ zu …"
    r"|a(?:vez)? (?:créé le groupe|modifié|changé)"  # fr
    r"|cre(?:ó|aste) el grupo|cambi(?:ó|aste)"  # es
    r"|creato il gruppo|cambiato l|modificato l"  # it: "ha cambiato l'oggetto da …", "Hai creato il gruppo …"
    r"|(?:heeft|hebt) (?:groep|het onderwerp|de groepsbeschrijving)"  # nl: "heeft groep „…“ gemaakt"
    r"|criou o grupo|(?:mudou|alterou) [oa] "  # pt: "mudou o assunto de …"
    r"|utworzył|zmienił"  # pl: "utworzył(a) grupę „…“"
    r"|creat grupul|a schimbat|ai schimbat)"  # ro
)
# iOS gives system texts an author (the group, or the contact) and a leading U+200E; only such texts are searched.
_SYSTEM_WORDS = {
    "en": r"end-to-end|joined using this group's invite link|\b(?:added|removed|left)\b|created (?:the )?group"
    r"|changed (?:the subject|this group's|the group|their phone number)|security code|Missed (?:voice|video) call"
    r"|disappearing messages|message timer|now an admin|pinned a message",
    "de": r"\b(?:Ende-zu-Ende|Sicherheitsnummer|hinzugefügt|entfernt|beigetreten|die Gruppe|Betreff|Verpasster"
    r"|selbstlöschende)",
    "fr": r"\b(?:bout en bout|code de sécurité|a ajouté|avez ajouté|a retiré|avez retiré|est partie?|a quitté"
    r"|a rejoint|créé le groupe|a modifié|avez modifié|a changé|avez changé|manqué|éphémères)",
    "es": r"\b(?:extremo a extremo|código de seguridad|añadió|agregó|añadiste|eliminó a|salió|se unió|creó el grupo"
    r"|creaste el grupo|cambió|cambiaste|perdida|mensajes temporales)",
    "it": r"\b(?:crittografat|codice di sicurezza|aggiunto|rimosso|è uscit|sei uscit|si è unit|creato il gruppo"
    r"|cambiato|ha modificato|hai modificato|persa|messaggi effimeri)",
    "nl": r"\b(?:versleuteld|beveiligingscode|toegevoegd|verwijderd|verlaten|neemt deel|heeft groep|hebt groep"
    r"|onderwerp|groepsbeschrijving|gemist|verdwijnende berichten)",
    "pt": r"\b(?:ponta a ponta|ponto a ponto|código de segurança|adicionou|removeu|saiu|entrou|criou o grupo|mudou"
    r"|alterou|chamada de (?:voz|vídeo) perdida|videochamada perdida|mensagens temporárias)",
    "pl": r"\b(?:zaszyfrowane|szyfrowane|kod zabezpieczeń|dodał|usunął|usunęła|opuścił|dołączył|utworzył|zmienił"
    r"|nieodebrane|znikające)",
    "ro": r"\b(?:criptate|de securitate|a adăugat|ați adăugat|a eliminat|a ieșit|s-a alăturat|a creat grupul"
    r"|a schimbat|apel (?:vocal|video) (?:ratat|nepreluat)|mesaje temporare)",
}
_SYSTEM = re.compile("|".join(_SYSTEM_WORDS.values()), re.IGNORECASE)
_SYSTEM_OF = {language: re.compile(words, re.IGNORECASE) for language, words in _SYSTEM_WORDS.items()}
# Deleted messages, the sender's own ("You deleted this message") and the others'; with or without a period.
_DELETED = re.compile(
    r"^(?:This message was deleted|You deleted this message"
    r"|Diese Nachricht wurde gelöscht|Du hast diese Nachricht gelöscht"
    r"|Ce message a été supprimé|Vous avez supprimé ce message"
    r"|Se eliminó este mensaje|Este mensaje fue eliminado|Eliminaste este mensaje"
    r"|Questo messaggio è stato eliminato|Hai eliminato questo messaggio"
    r"|Dit bericht is verwijderd|(?:Je|U) hebt dit bericht verwijderd"
    r"|Esta mensagem foi (?:apagada|eliminada)(?: pelo remetente)?|Mensagem apagada|(?:Você )?apagou esta mensagem"
    r"|Eliminou esta mensagem"  # pt-BR, pt-PT
    r"|Ta wiadomość została usunięta|Usun\S* tę wiadomość"  # pl: Usunięto, Usunąłeś, Usunęłaś, Usunąłeś(-ęłaś)
    r"|Acest mesaj a fost [șş]ters|A(?:i|[țţ]i) [șş]ters acest mesaj)\.?$",  # ro: comma or cedilla below
    re.IGNORECASE,
)
# The note WhatsApp appends to a message edited after it was sent.
_EDITED = re.compile(
    r"\s*<(?:This message was edited|Diese Nachricht wurde bearbeitet|Ce message a été modifié|Se editó este mensaje"
    r"|Questo messaggio è stato modificato|Dit bericht is bewerkt|Esta mensagem foi editada"
    r"|Ta wiadomość została (?:edytowana|zmieniona)|Acest mesaj a fost editat)\.?>$",
    re.IGNORECASE,
)
# What an export without media writes for a file it left out. Android: "<Media omitted>"; iOS names the kind,
# "image omitted", "immagine omessa", "obraz pominięty", or puts the word first, "pominięto naklejkę".
_KINDS = {
    "media": r"media|medien|m[ée]dias?|multim[ée]dia|m[íi]dia|arquivo de m[íi]dia|ficheiro|fichier|archivos?|pliki"
    r"|con[țţ]inut media",  # Android's "<…>": the kind is not said
    "image": r"image|immagine|bild|imagen|imagem|afbeelding|obraz|imagine",
    "video": r"vid[ée]o|v[íi]deo|wideo|clip video",
    "audio": r"[áa]udio|ficheiro de [áa]udio",
    "sticker": r"sticker|figurinha|autocolante?|autocollant|adesivo|pegatina|naklejk[aęe]",
    "gif": r"(?:plik )?gif",
    "document": r"document|documento|dokument",
    "contact card": r"contact card|kontaktkarte|fiche contact|carte de contact|scheda contatto|tarjeta de contacto"
    r"|visitekaartje|contactkaart|cart[ãa]o d[eo] conta(?:c?to)|contacto|wizyt[óo]wk[aęi](?: kontaktu)?"
    r"|carte de vizit[ăa](?: contact)?",
}
_KIND = "|".join(_KINDS.values())
_LEFT_OUT = (
    r"omitted|omitid[ao]s?|omess[aio]|esclus[ao]|non inclus[ao]|weggelassen|ausgeschlossen|ausgelassen|omis[eăa]?"
    r"|absente?|manquante?|retir[ée]e?|weggelaten|ocult(?:ad)?[ao]|n[ãa]o revelad[ao]|pomini[ęe]t[aeoy]"
)
_OMITTED = re.compile(
    rf"<?(?:(?P<kind>{_KIND})\s(?:{_LEFT_OUT})|(?:pomini[ęe]t[aeoy]|f[ăa]r[ăa])\s(?P<kind_first>{_KIND}))\.?>?",
    re.IGNORECASE,
)
# A document's note follows its name: "Fahrplan.pdf • 3 Seiten Dokument weggelassen".
_DOCUMENT_OMITTED = re.compile(rf"\s<?(?:{_KINDS['document']})\s(?:{_LEFT_OUT})\.?>?$", re.IGNORECASE)
_KIND_OF = {kind: re.compile(words, re.IGNORECASE) for kind, words in _KINDS.items()}
# iOS: "<attached: 00000012-PHOTO-….jpg>", "<allegato: …>", "<Anhang: …>", "<pièce jointe : …>".
_ATTACHED = re.compile(
    r"<(?P<word>attached|Anhang|angehängt|pièce jointe|adjunto|allegato|bijgevoegd|anexado|anexo|załączono"
    r"|załącznik|ata[șş]are|ata[șş]at) ?: (?P<name>[^<>]+)>",
    re.IGNORECASE,
)
# Android: "IMG-20231231-WA0001.jpg (file attached)", in the phone's language.
_FILE_ATTACHED = re.compile(
    r"^(?P<name>\S[^\n]*?\.\w{1,5}) \((?P<word>file attached|Datei angehängt|fichier joint|archivo adjunt(?:o|ado)"
    r"|file allegato|bestand bijgevoegd|(?:arquivo|ficheiro) anexado|za[łl][ąa]czon[oy] plik|plik za[łl][ąa]czony"
    r"|fi[șş]ier ata[șş]at)\)$",
    re.IGNORECASE,
)
# Which language the export's notes for media are in, by words only that language's notes use: "omitido" is
# Spanish and Portuguese, "video" half of Europe's, so "<documento omitido>" tells none (the system texts may).
_MEDIA_WORDS_OF = {
    language: re.compile(rf"\b(?:{words})\b", re.IGNORECASE)
    for language, words in {
        "en": r"omitted|attached|contact card",
        "it": r"omess[aio]|esclus[ao]|non inclus[ao]|allegato|immagine|scheda contatto",
        "de": r"weggelassen|ausgeschlossen|ausgelassen|Anhang|angehängt|Datei|Medien|Bild|Kontaktkarte",
        "fr": r"absente?|manquante?|retir[ée]e?|pièce jointe|fichier|médias?|medias|vidéo|autocollant|fiche contact"
        r"|carte de contact",
        "es": r"multimedia omitid[ao]s?|adjunt(?:o|ado)|archivos?|imagen|pegatina|tarjeta de contacto",
        "nl": r"weggelaten|bijgevoegd|bestand|afbeelding|visitekaartje|contactkaart",
        "pt": r"ocult(?:ad)?[ao]|n[ãa]o revelad[ao]|anexado|anexo|arquivo|ficheiro|m[íi]dia|multimédia|imagem|vídeo"
        r"|[áa]udio|figurinha|autocolante|cart[ãa]o",
        "pl": r"pomini[ęe]t[aeoy]|za[łl][ąa]czon[oy]|za[łl][ąa]cznik|plik|pliki|obraz|wideo|naklejk[aęe]"
        r"|wizyt[óo]wk[aęi]",
        "ro": r"omis[ăa]|f[ăa]r[ăa]|con[țţ]inut|ata[șş]are|ata[șş]at|fi[șş]ier|imagine|clip video|carte de vizit[ăa]",
    }.items()
}
_CHAT_NAME = re.compile(
    r"^(?:WhatsApp Chat with |WhatsApp Chat - |WhatsApp-Chat mit |Chat de WhatsApp con |Discussion WhatsApp avec )"
    r"(?P<name>.+)$"
)


@dataclass
class _Pending:
    """A message being read: its header line and any continuation lines."""

    line: int
    time: datetime
    author: str
    marked: bool  # iOS: the text began with U+200E, as system texts and attachments do
    lines: list[str] = field(default_factory=list)
    size: int = 0  # characters in `lines`
    dropped: int = 0  # characters left out past the bound

    def __post_init__(self) -> None:
        self.size = sum(len(line) + 1 for line in self.lines)

    def add(self, text: str, dropped: int, limit: int) -> None:
        """A line of the message, kept while the message stays within `limit` characters."""
        room = max(0, limit - self.size)
        if room:
            self.lines.append(text[:room])
            self.size += min(room, len(text)) + 1
        self.dropped += max(0, len(text) - room) + dropped


class _Unopenable(Exception):
    """The chat text inside a zip cannot be opened: where, and why."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(why)
        self.where = where
        self.why = why


class WhatsAppImporter(CheckedOnce):
    kind = "whatsapp"
    chat = True
    detect_order = 30
    summary = "Import a WhatsApp chat export (Android or iOS, with or without media)."
    path_help = "A chat export .txt or the .zip WhatsApp produces"
    options: Mapping[str, str] = {
        "date_order": "Force the date order of a WhatsApp export: dmy, mdy or ymd (default: detect)"
    }

    def __init__(
        self, path: Path, person: str, date_order: str | None = None, limits: ImportSettings | None = None
    ) -> None:
        if date_order is not None and date_order not in DATE_ORDERS:
            raise ValueError(f"date_order must be one of {', '.join(DATE_ORDERS)}, not {date_order!r}")
        self.path = path
        self.person = person
        self.date_order = date_order
        self.source = f"whatsapp:{path.name}"
        self.limits = import_limits(limits)
        match = _CHAT_NAME.match(path.stem)
        self.conversation = match["name"] if match else path.stem

    # -- sniffing -------------------------------------------------------------------------------------------

    def sniff(self) -> None:
        if not self.path.is_file():
            raise WrongKind(f"{self.path} is not a file: a WhatsApp export is a .txt or the .zip WhatsApp makes")
        try:
            with self._raw() as (name, raw):
                try:
                    # A bounded read: a big binary file given by mistake has no line ends to stop at.
                    head = raw.read(SNIFF_BYTES).decode("utf-8", errors="replace").splitlines()
                except READ_ERRORS as exc:  # inside a zip: corrupt or truncated data
                    raise _Unopenable(name, f"cannot be read ({describe(exc)})") from None
        except _Unopenable as exc:
            if _chat_name(exc.where):
                return  # WhatsApp's chat text that cannot be read: `items()` reports why
            raise WrongKind(f"{self.path.name} is not a readable WhatsApp export: {exc.why}") from None
        if not any(_header(text) for text in [line for line in head if line.strip()][:SNIFF_LINES]):
            raise WrongKind(
                f"{self.path.name} does not look like a WhatsApp chat export: none of its first lines reads like "
                "'31/12/2023, 21:05 - Anna: text' or '[31.12.23, 21:05:09] Anna: text'"
            )

    @contextmanager
    def _raw(self) -> Iterator[tuple[str, IO[bytes]]]:
        """The chat text's name and its bytes, from the .txt or from inside the .zip (inflated at most
        CONFIDE_IMPORTS__MAX_MEMBER_BYTES; raises `_Unopenable` when it cannot be)."""
        if not zipfile.is_zipfile(self.path):
            with self.path.open("rb") as raw:
                yield self.path.name, raw
            return
        with ExitStack() as stack:
            try:
                archive = stack.enter_context(zipfile.ZipFile(self.path))
            except READ_ERRORS as exc:  # a damaged central directory: is_zipfile only saw its end record
                raise _Unopenable(self.path.name, f"a damaged zip ({describe(exc)})") from None
            member = _chat_member(archive)
            if member is None:
                raise WrongKind(f"{self.path.name} is a zip without a chat .txt in it")
            name = f"{self.path.name}/{member.filename}"
            why = refusal(member, limit=member.file_size)  # its size is no reason: it is read up to the bound
            try:
                if why:
                    raise _Unopenable(name, why)
                bounds = self.limits
                limit, setting = member_limit(member, bounds.max_member_bytes, bounds.max_compression_ratio)
                stream = stack.enter_context(Capped(archive.open(member), limit, setting, bounds.max_compression_ratio))
            except READ_ERRORS as exc:  # a damaged local header, a name that differs from the directory's
                raise _Unopenable(name, f"cannot be opened ({describe(exc)})") from None
            yield name, cast(IO[bytes], stream)

    @contextmanager
    def _lines(self, problems: list[Problem]) -> Iterator[tuple[str, Iterator[tuple[int, str, int]]]]:
        """The chat text's name and its numbered lines, read lazily: (number, line, characters cut off it).
        A read error (a damaged or truncated zip) ends the lines with a `Problem` in `problems`; so does
        reaching the bound on what a zip member may inflate to."""
        with self._raw() as (name, raw):
            yield name, _until_error(_numbered(raw, self.limits.max_message_chars), name, problems)
            if isinstance(raw, Capped) and raw.cut:
                problems.append(Problem(name, f"{raw.why()}: the rest is not read"))

    # -- voice notes (bridge/models/transcriber.py) ------------------------------------------------------------------

    @cached_property
    def _audio(self) -> dict[str, str]:
        """The voice notes and audio files a zip "with media" holds, by file name (a .txt holds none)."""
        if not zipfile.is_zipfile(self.path):
            return {}
        try:
            with zipfile.ZipFile(self.path) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except READ_ERRORS:
            return {}  # the chat text's own reading reports the damage
        return {Path(n).name: n for n in names if media.kind_of(Path(n).name) in AUDIO_KINDS}

    def audio_bytes(self) -> int:
        try:
            with zipfile.ZipFile(self.path) as archive:
                return sum(archive.getinfo(member).file_size for member in self._audio.values())
        except READ_ERRORS:
            return 0

    def read_audio(self, name: str, limit: int) -> bytes:
        member = self._audio.get(name)
        if member is None:
            raise ValueError("not in the export")
        try:
            with zipfile.ZipFile(self.path) as archive:
                return read_member(archive, archive.getinfo(member), limit)
        except TooBig:
            raise ValueError(f"over CONFIDE_TRANSCRIBER__MAX_AUDIO_BYTES ({limit} bytes)") from None
        except Unreadable:
            raise  # encrypted, or a method other than deflate: its message says which
        except READ_ERRORS as exc:
            raise ValueError(f"cannot be read ({describe(exc)})") from None

    # -- reading --------------------------------------------------------------------------------------------

    def items(self) -> Iterator[HistoryRecord | Problem]:
        self.ensure_checked()
        yield from guarded(self._items(), self.path.name)

    def _items(self) -> Iterator[HistoryRecord | Problem]:
        order, assumed = self._date_order()
        if assumed:
            yield Problem(self.path.name, f"day and month order cannot be told from the dates; read them as {order}")
        occurrences = Occurrences()
        problems: list[Problem] = []
        try:
            with self._lines(problems) as (name, lines):
                yield from self._messages(name, lines, order, occurrences)
        except _Unopenable as exc:
            yield Problem(exc.where, exc.why)
        yield from problems

    def _messages(
        self, name: str, lines: Iterator[tuple[int, str, int]], order: str, occurrences: Occurrences
    ) -> Iterator[HistoryRecord | Problem]:
        limit = self.limits.max_message_chars
        languages: Counter[str] = Counter()  # the languages the export's own words were in, so far
        pending: _Pending | None = None
        dropping = False  # continuation lines of a header we could not read belong to its Problem
        for number, raw, dropped in lines:
            header = _header(raw)
            if header is None:
                if pending is not None:
                    pending.add(_MARKS.sub("", raw), dropped, limit)
                elif (text := raw.lstrip()) and not dropping:  # lines outside a message: one problem a run
                    first = number + raw.count("\n", 0, len(raw) - len(text))  # its first line with text
                    yield Problem(f"{name}:{first}", "text outside any message")
                continue
            if pending is not None:
                yield from self._finish(pending, name, occurrences, languages)
            pending, dropping = None, False
            try:
                pending = _start(number, header, order)
                pending.dropped += dropped
            except (ValueError, OverflowError) as exc:
                dropping = True
                yield Problem(f"{name}:{number}", f"unreadable date or time: {exc}")
        if pending is not None:
            yield from self._finish(pending, name, occurrences, languages)

    def _date_order(self) -> tuple[str, bool]:
        """The order the dates are in, from the file when any date settles it; whether it was assumed."""
        try:
            with self._lines([]) as (_, lines):  # read errors are reported by the reading that follows
                for _, raw, _ in lines:
                    header = _header(raw)
                    if header is not None and (found := _order_evidence(header["date"])):
                        return found, False
        except _Unopenable:
            pass
        if self.date_order:
            return self.date_order, False
        return "dmy", True

    def _finish(
        self, pending: _Pending, name: str, occurrences: Occurrences, languages: Counter[str]
    ) -> Iterator[HistoryRecord | Problem]:
        text = "\n".join(pending.lines).strip()
        if pending.dropped:
            length = pending.size + pending.dropped
            yield cut_problem(
                f"{name}:{pending.line}", "a message", length, self.limits.max_message_chars, "max_message_chars"
            )
        if pending.author == "":  # system line: nothing of the person's to remember, but its language
            _count(languages, _system_language(text))
            return
        if _DELETED.match(text):
            return  # a deleted message: nothing of the person's to remember
        if pending.marked and len(text) <= SYSTEM_TEXT_CHARS and _SYSTEM.search(text) and not _ATTACHED.search(text):
            _count(languages, _system_language(text))
            return  # iOS system text: it carries the group name as author, and a leading U+200E
        extra: dict[str, Any] = {"line": pending.line}
        # Only the end is searched: `\s*` before the note, tried at each of a million spaces, is quadratic.
        if edited := _EDITED.search(text[-100:]):
            text, extra["edited"] = text[: len(text) - len(edited.group())], True
        text, attachments, omitted, kind, told = _split_media(text)
        _count(languages, told)
        if attachments:
            extra["attachments"] = attachments
        if omitted:
            extra["media_omitted"] = True
        held = [n for n in attachments if n in self._audio]  # a voice note the zip holds: transcribed on import
        language = None
        same = text  # what the record's id is made of
        if not text and (attachments or omitted):  # media only: still a message of the chat, said in words
            export = told or (languages.most_common(1)[0][0] if languages else None)
            text = media.describe(attachments, kind, omitted, export)[: self.limits.max_message_chars]
            extra["media"] = True
            # Its id is made of the English description, whatever language it is said in: an export imported
            # again keeps its ids, whichever words it happened to tell its language by.
            same = media.describe(attachments, kind, omitted)[: self.limits.max_message_chars]
            # The language the description is in (too short to tell by itself); not a voice note's, whose text
            # becomes what was said in it.
            if export is not None and not held:
                language = export if export in REPLY_LANGUAGES else SOURCE_LANGUAGE
        when = pending.time.isoformat()
        count = occurrences.next(pending.time, pending.author, same, "|".join(attachments))
        yield HistoryRecord(
            id=stable_id("whatsapp", self.conversation, when, pending.author, same, "|".join(attachments), count),
            person=self.person,
            channel="whatsapp",
            conversation=self.conversation,
            author=pending.author,
            time=pending.time,
            text=text,
            source=self.source,
            link=f"{name}:{pending.line}",
            audio=held[0] if held else None,
            language=language,
            extra=extra,
        )


def _numbered(raw: IO[bytes], limit: int) -> Iterator[tuple[int, str, int]]:
    """Numbered lines without their ends, each cut at `limit` characters, with how many were cut off; the text
    is read in pieces, never held whole, whatever its lines.

    Lines that cannot start a message (not starting with a digit, "[" or a bidi mark: blank lines, a message's
    further lines) come joined in runs, numbered by their first line: joined again with their neighbours they
    read the same. They are found by a regex over each piece; read one by one, a zip of millions of line ends
    took minutes."""
    # utf-8-sig: some exports start with a BOM; errors="replace" so a stray byte costs one character, not the chat.
    text = io.TextIOWrapper(cast(BinaryIO, raw), encoding="utf-8-sig", errors="replace", newline=None)
    number = 0  # lines handed on so far
    carry: list[str] = []  # the start of the line the last piece ended in, at most `limit` characters of it
    kept = dropped = 0
    while piece := text.read(LINE_PIECE_CHARS):
        end = piece.rfind("\n")
        if end >= 0:
            block = "".join([*carry, piece[:end]])
            yield from _block(block, number, limit, dropped)
            number += block.count("\n") + 1
            carry, kept, dropped, piece = [], 0, 0, piece[end + 1 :]
        room = max(0, limit - kept)
        if room and piece:
            carry.append(piece[:room])
            kept += min(room, len(piece))
        dropped += max(0, len(piece) - room)
    if carry or dropped:
        yield from _block("".join(carry), number, limit, dropped)


def _block(block: str, number: int, limit: int, dropped: int) -> Iterator[tuple[int, str, int]]:
    """The lines of `block` (whole lines, the first numbered `number + 1`, `dropped` characters already cut off
    it): each line that may start a message alone, the lines between them as runs."""
    position = 0
    for match in _MAY_START.finditer(block):
        if match.start() > position:  # the lines before it, up to its line end
            yield number + 1, block[position : match.start() - 1], dropped
            number += block.count("\n", position, match.start())
            dropped = 0
        line = match.group()
        number += 1
        yield number, line[:limit], dropped + max(0, len(line) - limit)
        position, dropped = match.end() + 1, 0
    if position <= len(block):
        yield number + 1, block[position:], dropped


def _until_error(
    lines: Iterator[tuple[int, str, int]], name: str, problems: list[Problem]
) -> Iterator[tuple[int, str, int]]:
    """`lines` until one cannot be read: a truncated or corrupt zip member (EOFError, zlib.error, a bad CRC)
    ends them with a `Problem`, and what was read before is kept."""
    number = 0
    try:
        for number, line, dropped in lines:
            yield number, line, dropped
    except READ_ERRORS as exc:
        problems.append(Problem(f"{name}:{number + 1}", f"the rest cannot be read: {describe(exc)}"))


def _chat_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """`_chat.txt` (iOS), else the chat .txt (Android names it like the zip); media files are ignored."""
    texts = [
        i for i in archive.infolist() if i.filename.lower().endswith(".txt") and not i.filename.startswith("__MACOSX/")
    ]
    for info in texts:
        if Path(info.filename).name == "_chat.txt":
            return info
    for info in texts:
        if Path(info.filename).name.startswith("WhatsApp"):
            return info
    return texts[0] if texts else None


def _chat_name(where: str) -> bool:
    """Whether a zip member's path names WhatsApp's chat text (so the zip is an export, even unreadable)."""
    name = Path(where).name
    return where != name and (name == "_chat.txt" or name.startswith("WhatsApp"))


def _header(line: str) -> re.Match[str] | None:
    """The message header at the start of `line`, if any (leading bidi marks ignored)."""
    start = line.lstrip("\u200e\u200f\ufeff")
    return _IOS.match(start) or _ANDROID.match(start) or _IOS_OLD.match(start)


def _order_evidence(date: str) -> str | None:
    first, second, _ = re.split(r"[./-]", date)
    if len(first) == 4:
        return "ymd"
    if int(first) > 12:
        return "dmy"
    if int(second) > 12:
        return "mdy"
    return None


def _start(number: int, header: re.Match[str], order: str) -> _Pending:
    # Exports carry the phone's local time with no zone; it is stored as if it were UTC (wrong by the
    # phone's offset, but consistent, and the order and day of every message stay right).
    ampm = header["ampm"] or ("pm" if header["half"] in _PM_HALVES else "am" if header["half"] else None)
    time = _parse_time(header["date"], header["time"], ampm, order).replace(tzinfo=UTC)
    rest = header["rest"]
    match = None if _AUTHORLESS_EVENT.match(_MARKS.sub("", rest)) else _AUTHOR.match(rest)
    if match is None:
        return _Pending(number, time, author="", marked=True, lines=[_MARKS.sub("", rest)])
    author = _MARKS.sub("", match["author"]).strip()
    text = match["text"]
    return _Pending(number, time, author, marked=text.startswith("\u200e"), lines=[_MARKS.sub("", text)])


@lru_cache(maxsize=4096)  # a chat's messages share their minutes: each is parsed once
def _parse_time(date: str, clock: str, ampm: str | None, order: str) -> datetime:
    fields = [int(part) for part in re.split(r"[./-]", date)]
    if len(re.split(r"[./-]", date)[0]) == 4:
        order = "ymd"
    positions = {"dmy": (2, 1, 0), "mdy": (2, 0, 1), "ymd": (0, 1, 2)}[order]
    year, month, day = (fields[i] for i in positions)
    if year < 100:
        year += 2000
    parts = [int(p) for p in re.split(r"[:.]", clock)]
    hour, minute, second = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if ampm:
        if not 1 <= hour <= 12:
            raise ValueError(f"hour {hour} on a 12-hour clock")
        pm = ampm.lower().startswith("p")
        hour = hour % 12 + (12 if pm else 0)
    return datetime(year, month, day, hour, minute, second)


def _split_media(text: str) -> tuple[str, list[str], bool, str | None, str | None]:
    """The message's own text, the names of its attachments, whether media was left out of the export, the
    kind of file left out where the export says ("immagine omessa": image), and the language the export's notes
    on them are in where their words tell it."""
    found = list(_ATTACHED.finditer(text))
    names = [m["name"].strip() for m in found]
    words = [m["word"] for m in found]
    text = _ATTACHED.sub("", text).strip()
    first, _, rest = text.partition("\n")
    if match := _FILE_ATTACHED.match(first):
        names.append(match["name"])
        words.append(match["word"])
        text = rest.strip()
    if (note := _left_out(text)) is None:
        return text, names, False, None, _media_language(words)
    kind, name, word = note
    return "", [*names, name] if name else names, True, kind, _media_language([*words, word])


def _left_out(text: str) -> tuple[str | None, str, str] | None:
    """If `text` is the export's note that a file was left out: what kind of file, in the words `media.kind_of`
    knows ("immagine omessa": image; None for Android's "<Media omitted>", which does not say), the name a
    document's note gives ("" where none), and the note's own words."""
    if len(text) > MEDIA_NOTE_CHARS:
        return None
    if note := _OMITTED.fullmatch(text):
        word = note["kind"] or note["kind_first"]
        kind = next(kind for kind, words in _KIND_OF.items() if words.fullmatch(word))
        return (None if kind == "media" else kind), "", note.group()
    if note := _DOCUMENT_OMITTED.search(text, max(0, len(text) - NOTE_CHARS)):  # only the end: the note ends it
        return "document", text[: note.start()].partition("•")[0].strip(), note.group()  # "Fahrplan.pdf • 3 pages"
    return None


def _media_language(words: list[str]) -> str | None:
    """The one language whose notes on media use `words` ("Media omessi", "file allegato"); None where they are
    no language's alone, or several languages'."""
    if not words:
        return None
    said = " ".join(words)
    found = [language for language, own in _MEDIA_WORDS_OF.items() if own.search(said)]
    return found[0] if len(found) == 1 else None


def _system_language(text: str) -> str | None:
    """The language of a WhatsApp system text, where only one language's system texts use its words. English
    ones are left aside where another language's are there too: "crittografati end-to-end" is Italian."""
    if len(text) > SYSTEM_TEXT_CHARS:
        return None
    found = [language for language, words in _SYSTEM_OF.items() if words.search(text)]
    if len(found) > 1 and SOURCE_LANGUAGE in found:
        found.remove(SOURCE_LANGUAGE)
    return found[0] if len(found) == 1 else None


def _count(languages: Counter[str], language: str | None) -> None:
    if language is not None:
        languages[language] += 1
