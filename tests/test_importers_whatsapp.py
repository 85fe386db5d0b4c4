"""WhatsApp chat exports: Android and iOS layouts, clocks, date orders, media, system lines, broken lines."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from bridge.history.importers.base import Problem, WrongKind
from bridge.history.importers.registry import open_importer
from bridge.history.index import HistoryIndex
from bridge.history.ingest import ingest
from bridge.intake.media import describe
from bridge.messages import HistoryRecord
from tests.import_fixtures import ANDROID_US, IOS_DE, LRM, write_json, write_whatsapp_txt, write_whatsapp_zip


def run(path: Path, **options: object) -> tuple[list[HistoryRecord], list[Problem]]:
    items = list(open_importer("whatsapp", path, "me", **options).items())
    return [i for i in items if isinstance(i, HistoryRecord)], [i for i in items if isinstance(i, Problem)]


def test_android_month_first_twelve_hour_export(tmp_path: Path) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, ANDROID_US))
    assert problems == []
    first = records[0]
    # A multi-line message is one record, blank line included; the system lines before it are gone.
    assert first.text == "The cabin wifi password is\npinecone-42\n\n(all lowercase: the router is old)"
    assert (first.author, first.conversation, first.channel) == ("Anna", "Anna", "whatsapp")
    assert first.time == datetime(2023, 12, 31, 21, 5, tzinfo=UTC)  # 9:05\u202fPM, month first
    assert first.link == "WhatsApp Chat with Anna.txt:5"
    assert {r.source for r in records} == {"whatsapp:WhatsApp Chat with Anna.txt"}
    texts = [r.text for r in records]
    assert not any("encrypted" in t or "joined" in t or "added" in t or "Trip" in t for t in texts)
    assert not any("deleted" in t for t in texts)
    by_line = {r.extra["line"]: r for r in records}
    # A message that is only media is a message of the chat: kept, saying what was sent.
    assert by_line[9].text == "sent a media file (not included in the export)"
    assert by_line[9].extra["media_omitted"] is True and by_line[9].extra["media"] is True
    assert by_line[10].text == "View from the porch"
    assert by_line[10].extra["attachments"] == ["IMG-20231231-WA0001.jpg"]
    assert by_line[15].author == "+1 (555) 010-9999"  # bidi marks around the number stripped
    assert by_line[16].text == "Happy new year: see you at 1:00 PM"  # only the first ": " splits the author off
    assert by_line[16].time == datetime(2023, 12, 31, 23, 59, tzinfo=UTC)
    assert by_line[17].time.hour == 12  # 12:30 PM is noon
    assert by_line[18].time == datetime(2024, 1, 13, 0, 15, tzinfo=UTC)  # 12:15 AM is after midnight
    assert by_line[18].text == "late night" and by_line[18].extra["edited"] is True


def test_identical_messages_get_their_own_ids_and_ids_are_stable(tmp_path: Path) -> None:
    path = write_whatsapp_txt(tmp_path, ANDROID_US)
    first, _ = run(path)
    again, _ = run(path)
    assert [r.id for r in first] == [r.id for r in again]
    assert len({r.id for r in first}) == len(first)
    oks = [r for r in first if r.text == "ok"]
    assert len(oks) == 2 and oks[0].id != oks[1].id
    # A later, longer export of the same chat gives the earlier messages the same ids: re-import adds only news.
    longer = write_whatsapp_txt(tmp_path / "later", [*ANDROID_US, "01/14/24, 8:00 AM - Ben: morning"])
    later, _ = run(longer)
    assert {r.id for r in first} < {r.id for r in later}


def test_ios_zip_day_first_with_seconds(tmp_path: Path) -> None:
    records, problems = run(write_whatsapp_zip(tmp_path, IOS_DE))
    assert problems == []
    assert {r.conversation for r in records} == {"Familie"}
    assert {r.source for r in records} == {"whatsapp:WhatsApp Chat - Familie.zip"}
    assert [r.author for r in records] == ["Anna", "Ben", "Ben", "Ben", "Anna"]
    meeting = records[0]
    assert meeting.text == "Wir treffen uns um 10 Uhr\nam Bahnhof, Gleis 3."
    assert meeting.time == datetime(2023, 12, 31, 21, 6, 0, tzinfo=UTC)
    assert records[1].extra["attachments"] == ["00000012-PHOTO-2023-12-31-21-07-00.jpg"]
    assert records[1].text == "sent a photo (00000012-PHOTO-2023-12-31-21-07-00.jpg)"
    assert records[2].extra["media_omitted"] is True and records[2].text == "sent a photo (not included in the export)"
    assert records[3].extra["attachments"] == ["Fahrplan.pdf"] and records[3].text == "sent a document (Fahrplan.pdf)"
    assert records[4].text == "Frohes neues Jahr!" and records[4].time == datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)
    assert all("\u200e" not in r.text and "\u200e" not in r.author for r in records)
    assert records[0].link == "WhatsApp Chat - Familie.zip/_chat.txt:3"


def test_android_zip_with_the_chat_named_like_the_zip(tmp_path: Path) -> None:
    path = tmp_path / "WhatsApp Chat with Ben.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("IMG-20231231-WA0001.jpg", b"\xff\xd8")
        archive.writestr("WhatsApp Chat with Ben.txt", "31/12/2023, 21:05 - Ben: Ferry at 7:40\n")
    records, _ = run(path)
    assert [(r.text, r.conversation, r.time.month) for r in records] == [("Ferry at 7:40", "Ben", 12)]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("31/12/2023, 21:05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("31.12.23, 21.05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("2023-12-31, 21:05 - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("[12/31/23, 9:05:09 PM] Anna: x", datetime(2023, 12, 31, 21, 5, 9)),
        ("12/31/23, 9:05 p.m. - Anna: x", datetime(2023, 12, 31, 21, 5)),
        ("12/31/23, 9:05 a.m. - Anna: x", datetime(2023, 12, 31, 9, 5)),
        ("12/31/23, 12:05\u202fa.m. - Anna: x", datetime(2023, 12, 31, 0, 5)),
    ],
)
def test_date_and_clock_layouts(tmp_path: Path, line: str, expected: datetime) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, [line]))
    assert problems == []
    assert [r.time for r in records] == [expected.replace(tzinfo=UTC)]


def test_ambiguous_dates_follow_the_option_or_are_reported(tmp_path: Path) -> None:
    path = write_whatsapp_txt(tmp_path, ["05/06/23, 10:00 - Anna: hi", "05/06/23, 10:01 - Ben: hello"])
    may, problems = run(path, date_order="mdy")
    assert problems == [] and may[0].time.month == 5
    june, _ = run(path, date_order="dmy")
    assert june[0].time.month == 6
    guessed, problems = run(path)
    assert len(problems) == 1 and "day and month" in problems[0].why
    assert len(guessed) == 2
    # Evidence in the file wins over the option: 13 cannot be a month.
    evident = write_whatsapp_txt(tmp_path / "e", ["05/06/23, 10:00 - Anna: hi", "13/06/23, 10:01 - Ben: x"])
    records, _ = run(evident, date_order="mdy")
    assert records[0].time.month == 6


def test_malformed_lines_are_problems_and_the_rest_imports(tmp_path: Path) -> None:
    lines = [
        "stray text before any message",
        "31/12/2023, 21:05 - Anna: first",
        "31/13/2023, 21:06 - Anna: a month that does not exist",
        "and its second line",
        "31/12/2023, 25:07 - Ben: an hour that does not exist",
        "31/12/2023, 21:08 - Ben: last",
    ]
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert [r.text for r in records] == ["first", "last"]
    assert [p.where for p in problems] == [
        "WhatsApp Chat with Anna.txt:1",
        "WhatsApp Chat with Anna.txt:3",
        "WhatsApp Chat with Anna.txt:5",
    ]


def test_not_a_whatsapp_export_is_refused_before_anything(tmp_path: Path) -> None:
    json_file = write_json(tmp_path / "result.json", {"name": "Anna", "messages": []})
    note = tmp_path / "note.txt"
    note.write_text("Shopping list\n\nmilk, eggs\n")
    empty_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("IMG-1.jpg", b"\xff\xd8")
    for path in (json_file, note, empty_zip, tmp_path):
        importer = open_importer("whatsapp", path, "me")
        with pytest.raises(WrongKind):
            importer.check()
        with pytest.raises(WrongKind):
            next(iter(importer.items()))


async def test_a_photo_sent_without_words_is_found_by_what_was_said_around_it(
    tmp_path: Path, history: HistoryIndex
) -> None:
    lines = [
        "12/31/23, 9:05\u202fPM - Ben: Look, the new boat is in the water!",
        "12/31/23, 9:06\u202fPM - Ben: IMG-20231231-WA0007.jpg (file attached)",
        "12/31/23, 9:07\u202fPM - Anna: 😍⛵👍",  # emoji only: a message too
        "12/31/23, 9:30\u202fPM - Anna: Dinner is at eight, bring the salad",
        "01/02/24, 8:00\u202fAM - Anna: The plumber comes on Thursday",
    ]
    importer = open_importer("whatsapp", write_whatsapp_txt(tmp_path, lines), "alice")
    summary = await ingest(history, "alice", importer.items())
    assert (summary.imported, summary.skipped) == (5, 0)
    hits = await history.search("alice", "When did Ben send the photo of the boat?", limit=2)
    photo = [h.record for h in hits if h.record.extra.get("media")]
    assert [r.text for r in photo] == ["sent a photo (IMG-20231231-WA0007.jpg)"]
    assert photo[0].author == "Ben" and photo[0].time == datetime(2023, 12, 31, 21, 6, tzinfo=UTC)
    [emoji] = [r async for r in history.export("alice") if r.author == "Anna" and r.time.minute == 7]
    assert emoji.text == "😍⛵👍"


@pytest.mark.parametrize(
    ("layout", "lines", "first_time"),
    [
        # iOS before 2017: no brackets, a colon after the time (12- and 24-hour clocks).
        ("old iOS, 12-hour", ["12/31/15, 9:05:23 PM: Anna: the key is under the mat",
                              "1/1/16, 10:00:00 AM: Ben: Happy new year"], datetime(2015, 12, 31, 21, 5, 23)),
        ("old iOS, 24-hour", ["31/12/2015 21:05:23: Anna: the key is under the mat",
                              "01/01/2016 10:00:00: Ben: Happy new year"], datetime(2015, 12, 31, 21, 5, 23)),
        # ISO dates (phones set to an ISO region format), with and without the comma.
        ("ISO, Android", ["2023-12-31, 21:05 - Anna: the key is under the mat",
                          "2024-01-01 10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("ISO, iOS", ["[2023-12-31, 21:05:09] Anna: the key is under the mat",
                      "[2024-01-01, 10:00:00] Ben: Happy new year"], datetime(2023, 12, 31, 21, 5, 9)),
        # Chinese and Japanese 12-hour clocks: the half of the day before the time.
        ("Chinese", ["2023/12/31 下午9:05 - Anna: the key is under the mat",
                     "2024/1/1 上午10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("Japanese", ["2023/12/31 午後9:05 - Anna: the key is under the mat",
                      "2024/01/01 午前10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        # Localized 12-hour marks and German day-first dates.
        ("Spanish", ["31/12/23, 9:05 p. m. - Anna: the key is under the mat",
                     "1/1/24, 10:00 a. m. - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
        ("German", ["31.12.23, 21:05 - Anna: the key is under the mat",
                    "01.01.24, 10:00 - Ben: Happy new year"], datetime(2023, 12, 31, 21, 5)),
    ],
)  # fmt: skip
def test_older_and_localized_layouts(tmp_path: Path, layout: str, lines: list[str], first_time: datetime) -> None:
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert problems == [], layout
    assert [(r.author, r.text) for r in records] == [("Anna", "the key is under the mat"), ("Ben", "Happy new year")]
    assert records[0].time == first_time.replace(tzinfo=UTC)
    assert records[1].time.hour == 10 and records[1].time.date().isoformat().endswith("01-01")


# -- Exports in the phone's language ---------------------------------------------------------------------------


class Locale(NamedTuple):
    """What an export written in one phone language holds, as WhatsApp words it (see the importer's patterns)."""

    android: str  # the header before the author, in the language's usual date order; {m}: the minute
    ios: str
    encrypted: str  # the end-to-end encryption notice
    created: str  # a group event holding ": " (the group's name)
    added: str  # a group event as iOS writes it, with the group as author
    text: str
    later: str  # a message then edited
    caption: str
    media: str  # Android: a file left out
    image: str  # iOS: a photo left out
    deleted: str  # someone else deleted theirs
    you_deleted: str
    edited: str
    attached: str  # Android: "(file attached)"
    ios_attached: str  # iOS: "<attached: …>"
    document: str  # iOS: a document left out, after its name and " • "


LOCALES = {
    "de": Locale(
        "31.12.23, 21:{m:02d} - ", "[31.12.23, 21:{m:02d}:00] ",
        "Nachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt. Niemand außerhalb dieses Chats kann sie lesen oder "
        "anhören, nicht einmal WhatsApp. Tippe, um mehr zu erfahren.",
        "Anna hat die Gruppe „Ausflug: Lissabon“ erstellt", "Anna hat Ben hinzugefügt",
        "Wir treffen uns um 10 Uhr am Bahnhof", "Gleis 3", "Blick von der Veranda",
        "<Medien ausgeschlossen>", "Bild weggelassen", "Diese Nachricht wurde gelöscht",
        "Du hast diese Nachricht gelöscht.", "<Diese Nachricht wurde bearbeitet>", "Datei angehängt", "Anhang",
        "3 Seiten Dokument weggelassen",
    ),
    "fr": Locale(
        "31/12/2023 21:{m:02d} - ", "[31/12/2023 21:{m:02d}:00] ",
        "Les messages et les appels sont chiffrés de bout en bout. Aucun tiers, pas même WhatsApp, ne peut les lire "
        "ou les écouter. Appuyez pour en savoir plus.",
        "Anna a créé le groupe « Voyage : Lisbonne »", "Anna a ajouté Ben",
        "On se retrouve à 10 h à la gare", "Voie 3", "Vue de la terrasse",
        "<Médias omis>", "image absente", "Ce message a été supprimé",
        "Vous avez supprimé ce message", "<Ce message a été modifié>", "fichier joint", "pièce jointe",
        "3 pages document manquant",
    ),
    "es": Locale(
        "31/12/23, 21:{m:02d} - ", "[31/12/23, 21:{m:02d}:00] ",
        "Los mensajes y las llamadas están cifrados de extremo a extremo. Nadie fuera de este chat, ni siquiera "
        "WhatsApp, puede leerlos ni escucharlos. Toca para obtener más información.",
        'Anna creó el grupo "Viaje: Lisboa"', "Anna añadió a Ben",
        "Nos vemos a las 10 en la estación", "Andén 3", "Vista desde el porche",
        "<Multimedia omitido>", "imagen omitida", "Se eliminó este mensaje.",
        "Eliminaste este mensaje.", "<Se editó este mensaje.>", "archivo adjunto", "adjunto",
        "3 páginas documento omitido",
    ),
    "it": Locale(
        "31/12/23, 21:{m:02d} - ", "[31/12/23, 21:{m:02d}:00] ",
        "I messaggi e le chiamate sono crittografati end-to-end. Nessuno al di fuori di questa chat, nemmeno "
        "WhatsApp, può leggerli o ascoltarli. Tocca per saperne di più.",
        'Anna ha creato il gruppo "Gita: Lisbona"', "Anna ha aggiunto Ben",
        "Ci vediamo alle 10 in stazione", "Binario 3", "Vista dal portico",
        "<Media omessi>", "immagine omessa", "Questo messaggio è stato eliminato",
        "Hai eliminato questo messaggio", "<Questo messaggio è stato modificato>", "file allegato", "allegato",
        "3 pagine documento omesso",
    ),
    "nl": Locale(
        "31-12-2023 21:{m:02d} - ", "[31-12-2023 21:{m:02d}:00] ",
        "Berichten en gesprekken worden end-to-end versleuteld. Niemand buiten deze chat, zelfs WhatsApp niet, kan "
        "ze lezen of beluisteren. Tik voor meer informatie.",
        'Anna heeft groep "Uitje: Lissabon" gemaakt', "Anna heeft Ben toegevoegd",
        "We zien elkaar om 10 uur op het station", "Spoor 3", "Uitzicht vanaf de veranda",
        "<Media weggelaten>", "afbeelding weggelaten", "Dit bericht is verwijderd",
        "Je hebt dit bericht verwijderd", "<Dit bericht is bewerkt>", "bestand bijgevoegd", "bijgevoegd",
        "3 pagina's document weggelaten",
    ),
    "pt-BR": Locale(
        "31/12/2023 21:{m:02d} - ", "[31/12/2023, 21:{m:02d}:00] ",
        "As mensagens e as chamadas são protegidas com a criptografia de ponta a ponta e ficam somente entre você e "
        "os participantes desta conversa. Nem mesmo o WhatsApp pode ler ou ouvi-las. Toque para saber mais.",
        'Anna criou o grupo "Viagem: Lisboa"', "Anna adicionou Ben",
        "A gente se vê às 10 na estação", "Plataforma 3", "Vista da varanda",
        "<Mídia oculta>", "imagem ocultada", "Esta mensagem foi apagada",
        "Você apagou esta mensagem", "<Esta mensagem foi editada>", "arquivo anexado", "anexado",
        "3 páginas documento omitido",
    ),
    "pt-PT": Locale(
        "31/12/23, 21:{m:02d} - ", "[31/12/23, 21:{m:02d}:00] ",
        "As mensagens e as chamadas são encriptadas ponto a ponto. Ninguém fora desta conversa, nem mesmo o "
        "WhatsApp, pode lê-las ou ouvi-las. Toque para saber mais.",
        'Anna criou o grupo "Viagem: Lisboa"', "Anna adicionou Ben",
        "Encontramo-nos às 10 na estação", "Linha 3", "Vista do alpendre",
        "<Multimédia omitido>", "imagem não revelada", "Esta mensagem foi eliminada",
        "Apagou esta mensagem", "<Esta mensagem foi editada>", "ficheiro anexado", "anexo",
        "3 páginas documento não revelado",
    ),
    "pl": Locale(
        "31.12.2023, 21:{m:02d} - ", "[31.12.2023, 21:{m:02d}:00] ",
        "Wiadomości i połączenia są szyfrowane end-to-end. Nikt spoza tego czatu, nawet WhatsApp, nie może ich "
        "odczytać ani odsłuchać. Dotknij, aby dowiedzieć się więcej.",
        "Anna utworzyła grupę „Wycieczka: Lizbona”", "Anna dodała Bena",
        "Widzimy się o 10 na dworcu", "Peron 3", "Widok z werandy",
        "<Pominięto multimedia>", "obraz pominięty", "Ta wiadomość została usunięta",
        "Usunięto tę wiadomość", "<Ta wiadomość została edytowana>", "załączono plik", "załączono",
        "3 strony dokument pominięty",
    ),
    "ro": Locale(
        "31.12.2023, 21:{m:02d} - ", "[31.12.2023, 21:{m:02d}:00] ",
        "Mesajele și apelurile sunt criptate integral. Nicio persoană din afara acestui chat, nici măcar WhatsApp, "
        "nu le poate citi sau asculta. Atinge pentru a afla mai multe.",
        "Anna a creat grupul „Excursie: Lisabona”", "Anna l-a adăugat pe Ben",
        "Ne vedem la 10 la gară", "Linia 3", "Priveliște de pe verandă",
        "<Media omise>", "Imagine omisă", "Acest mesaj a fost șters",
        "Ai șters acest mesaj", "<Acest mesaj a fost editat>", "fișier atașat", "atașare",
        "3 pagini document omis",
    ),
}  # fmt: skip

IOS_PHOTO = "00000012-PHOTO-2023-12-31-21-07-00.jpg"  # in the zip `write_whatsapp_zip` writes
# The language a media-only message of each export is described in: the export's, where Confide speaks it.
DESCRIBED_IN = {"de": "de", "fr": "fr", "es": "es", "it": "it", "nl": "nl", "pt-BR": "en", "pt-PT": "en", "pl": "en",
                "ro": "en"}  # fmt: skip


def shown(records: list[HistoryRecord]) -> list[tuple[str, str, dict[str, object]]]:
    return [(r.author, r.text, r.extra) for r in records]


@pytest.mark.parametrize("language", LOCALES)
def test_android_export_in_the_phones_language(tmp_path: Path, language: str) -> None:
    words = LOCALES[language]
    at = words.android.format
    lines = [
        at(m=0) + words.encrypted,  # line 1: no author
        at(m=0) + words.created,  # its ": " is in the group's name, not after an author
        at(m=1) + f"Anna: {words.text}",  # line 3
        at(m=2) + f"Ben: {words.media}",
        at(m=3) + f"Ben: {words.deleted}",
        at(m=4) + f"Anna: {words.you_deleted}",
        at(m=5) + f"Anna: {words.later} {words.edited}",  # line 7
        at(m=6) + f"Ben: IMG-20231231-WA0001.jpg ({words.attached})",
        words.caption,
    ]
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert problems == []
    said_in = DESCRIBED_IN[language]
    left_out = describe([], None, True, said_in)
    assert (left_out == "sent a media file (not included in the export)") == (said_in == "en")
    assert shown(records) == [
        ("Anna", words.text, {"line": 3}),
        ("Ben", left_out, {"line": 4, "media_omitted": True, "media": True}),
        ("Anna", words.later, {"line": 7, "edited": True}),
        ("Ben", words.caption, {"line": 8, "attachments": ["IMG-20231231-WA0001.jpg"]}),
    ]
    # The description's language is told (too short to tell); the people's own words are left to the index.
    assert [r.language for r in records] == [None, said_in, None, None]
    assert records[0].time == datetime(2023, 12, 31, 21, 1, tzinfo=UTC)  # day first, as the language writes it


@pytest.mark.parametrize("language", LOCALES)
def test_ios_export_in_the_phones_language(tmp_path: Path, language: str) -> None:
    words = LOCALES[language]
    at = words.ios.format
    lines = [
        at(m=0) + f"Familie: {LRM}{words.encrypted}",  # iOS: the group is the author of its system texts
        at(m=1) + f"Anna: {words.text}",  # line 2
        at(m=2) + f"Ben: {LRM}{words.image}",
        at(m=3) + f"Ben: {LRM}{words.deleted}",
        at(m=4) + f"Anna: {LRM}{words.you_deleted}",
        at(m=5) + f"Anna: {words.later} {LRM}{words.edited}",  # line 6
        LRM + at(m=6) + f"Ben: {LRM}<{words.ios_attached}: {IOS_PHOTO}>",
        at(m=7) + f"Ben: {LRM}Plan.pdf • {LRM}{words.document}",
        at(m=8) + f"Familie: {LRM}{words.added}",
    ]
    records, problems = run(write_whatsapp_zip(tmp_path, lines))
    assert problems == []
    omitted = {"media_omitted": True, "media": True}
    said_in = DESCRIBED_IN[language]
    assert shown(records) == [
        ("Anna", words.text, {"line": 2}),
        ("Ben", describe([], "image", True, said_in), {"line": 3, **omitted}),
        ("Anna", words.later, {"line": 6, "edited": True}),
        ("Ben", describe([IOS_PHOTO], None, False, said_in), {"line": 7, "attachments": [IOS_PHOTO], "media": True}),
        ("Ben", describe(["Plan.pdf"], None, True, said_in), {"line": 8, "attachments": ["Plan.pdf"], **omitted}),
    ]
    assert [r.language for r in records] == [None, said_in, None, said_in, said_in]
    assert records[0].time == datetime(2023, 12, 31, 21, 1, tzinfo=UTC)


# iOS names what it left out, each kind in each language (WhatsApp's own translations, as far as known).
IOS_LEFT_OUT = {
    "photo": ["immagine omessa", "Bild weggelassen", "image absente", "imagen omitida", "afbeelding weggelaten",
              "imagem ocultada", "imagem não revelada", "obraz pominięty", "Imagine omisă"],
    "video": ["video omesso", "Video weggelassen", "vidéo absente", "Video omitido", "video weggelaten",
              "vídeo ocultado", "vídeo não revelado", "wideo pominięte", "clip video omis"],
    "audio file": ["audio omesso", "Audio weggelassen", "audio omis", "audio omitido", "audio weggelaten",
                   "áudio ocultado", "ficheiro de áudio não revelado", "audio pominięte", "fără audio"],
    "sticker": ["sticker non incluso", "Sticker weggelassen", "sticker omis", "sticker omitido", "sticker weggelaten",
                "figurinha omitida", "sticker não revelado", "pominięto naklejkę", "autocolant omis"],
    "GIF": ["GIF esclusa", "GIF weggelassen", "GIF retiré", "GIF omitido", "GIF weggelaten", "GIF não revelada",
            "Plik GIF pominięty", "GIF omis"],
    "document": ["documento omesso", "Dokument weggelassen", "document manquant", "documento omitido",
                 "document weggelaten", "documento não revelado", "dokument pominięty", "document omis"],
    "contact card": ["Scheda contatto omessa", "Kontaktkarte ausgelassen", "Fiche contact manquante",
                     "Tarjeta de contacto omitida", "Visitekaartje weggelaten", "Cartão do contato omitido",
                     "Contacto não revelado", "Pominięta wizytówka kontaktu", "Carte de vizită contact omisă"],
}  # fmt: skip


@pytest.mark.parametrize("kind", IOS_LEFT_OUT)
def test_ios_says_what_kind_of_file_it_left_out(tmp_path: Path, kind: str) -> None:
    notes = IOS_LEFT_OUT[kind]
    lines = [f"[31.12.23, 21:{i:02d}:00] Ben: {LRM}{note}" for i, note in enumerate(notes)]
    records, _ = run(write_whatsapp_zip(tmp_path, lines))
    # Each in the language its note is in, where the note's words tell it (else the language told so far).
    hint = {"audio file": "audio"}.get(kind, kind)
    assert [r.text for r in records] == [describe([], hint, True, r.language) for r in records]
    article = "an" if kind[0] in "aeiou" else "a"
    assert f"sent {article} {kind} (not included in the export)" == describe([], hint, True)
    assert all(r.extra["media_omitted"] and r.extra["media"] for r in records)


def test_other_wordings_of_the_same_notes(tmp_path: Path) -> None:
    """Older app versions, the other Portuguese, the other Polish form: the same notes, other words."""
    lines = [
        "31/12/2023, 21:00 - Ben: <Mídia omitida>",
        "31/12/2023, 21:01 - Ben: <Ficheiro não revelado>",
        "31/12/2023, 21:02 - Ben: <Medien weggelassen>",
        "31/12/2023, 21:03 - Ben: <Conținut media omis>",
        "31/12/2023, 21:04 - Ben: <pliki pominięto>",
        "31/12/2023, 21:05 - Ben: IMG-1.jpg (plik załączony)",
        "31/12/2023, 21:06 - Ben: IMG-2.jpg (załączony plik)",
        "31/12/2023, 21:07 - Ben: IMG-3.jpg (archivo adjuntado)",
        "31/12/2023, 21:08 - Ben: IMG-4.jpg (FILE ALLEGATO)",
        f"[31/12/2023, 21:09:00] Ben: {LRM}<pièce jointe : 00000014-PHOTO.jpg>",
        "31/12/2023, 21:10 - Anna: Do jutra <Ta wiadomość została zmieniona>",
        "31/12/2023, 21:11 - Anna: La 10 <ACEST MESAJ A FOST EDITAT.>",
    ]
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert problems == []
    omitted = {"media_omitted": True, "media": True}
    left_out = ("sent a media file (not included in the export)", omitted)
    photo = [(f"IMG-{n}.jpg", {"attachments": [f"IMG-{n}.jpg"], "media": True}) for n in (1, 2, 3, 4)]
    # Each note described in its own language, where its words tell it.
    expected = [
        left_out,
        left_out,
        ("schickte eine Mediendatei (nicht im Export enthalten)", omitted),
        left_out,
        left_out,
        *[(f"sent a photo ({name})", extra) for name, extra in photo[:2]],
        (f"envió una foto ({photo[2][0]})", photo[2][1]),
        (f"ha inviato una foto ({photo[3][0]})", photo[3][1]),
        ("a envoyé une photo (00000014-PHOTO.jpg)", {"attachments": ["00000014-PHOTO.jpg"], "media": True}),
        ("Do jutra", {"edited": True}),
        ("La 10", {"edited": True}),
    ]
    assert [(r.text, {k: v for k, v in r.extra.items() if k != "line"}) for r in records] == expected
    assert [r.language for r in records] == [*["en"] * 2, "de", *["en"] * 4, "es", "it", "fr", None, None]


IT_ENCRYPTED = LOCALES["it"].encrypted


def test_an_italian_export_describes_its_media_in_italian(tmp_path: Path) -> None:
    """A description is too short to tell its language: the importer says it, as the export's words told it."""
    lines = [
        f"31/12/23, 21:00 - {IT_ENCRYPTED}",
        "31/12/23, 21:01 - Ben: <Media omessi>",
        "31/12/23, 21:02 - Ben: IMG-20231231-WA0001.jpg (file allegato)",
        "31/12/23, 21:03 - Anna: VID-20231231-WA0002.mp4 (file allegato)",
        "Guarda che onde",
        "31/12/23, 21:04 - Anna: Ci vediamo alle 10",
    ]
    records, problems = run(write_whatsapp_txt(tmp_path, lines))
    assert problems == []
    assert [(r.text, r.language) for r in records] == [
        ("ha inviato un file multimediale (non presente nell'esportazione)", "it"),
        ("ha inviato una foto (IMG-20231231-WA0001.jpg)", "it"),
        ("Guarda che onde", None),  # a caption: the person's own words, told by the index
        ("Ci vediamo alle 10", None),
    ]


def test_an_italian_ios_export_with_its_media_describes_them_in_italian(tmp_path: Path) -> None:
    lines = [
        f"[31/12/23, 21:00:00] Familie: {LRM}{IT_ENCRYPTED}",
        f"[31/12/23, 21:07:00] Ben: {LRM}<allegato: {IOS_PHOTO}>",
        f"[31/12/23, 21:08:00] Ben: {LRM}<allegato: 00000013-AUDIO-2023-12-31-21-08-00.opus>",
    ]
    records, problems = run(write_whatsapp_zip(tmp_path, lines))
    assert problems == []
    photo, voice = records
    assert (photo.text, photo.language) == (f"ha inviato una foto ({IOS_PHOTO})", "it")
    assert voice.text == "ha inviato un messaggio vocale (00000013-AUDIO-2023-12-31-21-08-00.opus)"
    # The zip holds the note: its text becomes what was said in it, whose language is the index's to tell.
    assert voice.audio == "00000013-AUDIO-2023-12-31-21-08-00.opus" and voice.language is None


def test_a_note_tells_its_language_without_any_system_text(tmp_path: Path) -> None:
    records, _ = run(write_whatsapp_txt(tmp_path, ["31/12/23, 21:01 - Ben: <Media omessi>"]))
    assert [(r.text, r.language) for r in records] == [
        ("ha inviato un file multimediale (non presente nell'esportazione)", "it")
    ]


def test_a_note_in_words_several_languages_share_is_told_by_the_system_texts(tmp_path: Path) -> None:
    """A document "omitido" may be Spanish or Portuguese: the export's system texts tell which."""
    note = f"[31/12/23, 21:08:00] Ben: {LRM}Plan.pdf • {LRM}3 páginas documento omitido"
    (tmp_path / "es").mkdir()
    (tmp_path / "pt").mkdir()
    alone, _ = run(write_whatsapp_zip(tmp_path, [note]))
    assert [(r.text, r.language) for r in alone] == [("sent a document (Plan.pdf)", None)]
    spanish = [f"[31/12/23, 21:00:00] Familie: {LRM}{LOCALES['es'].encrypted}", note]
    records, _ = run(write_whatsapp_zip(tmp_path / "es", spanish))
    assert [(r.text, r.language) for r in records] == [("envió un documento (Plan.pdf)", "es")]
    portuguese = [f"[31/12/23, 21:00:00] Familie: {LRM}{LOCALES['pt-BR'].encrypted}", note]
    records, _ = run(write_whatsapp_zip(tmp_path / "pt", portuguese))
    assert [(r.text, r.language) for r in records] == [("sent a document (Plan.pdf)", "en")]  # pt: not spoken


def test_an_english_export_describes_its_media_as_before(tmp_path: Path) -> None:
    records, _ = run(write_whatsapp_txt(tmp_path, ANDROID_US))
    media = [(r.text, r.language) for r in records if r.extra.get("media")]
    assert media == [("sent a media file (not included in the export)", "en")]
    assert {r.language for r in records if not r.extra.get("media")} == {None}


def test_a_description_in_another_language_keeps_the_records_id(tmp_path: Path) -> None:
    """The id is made of the English description: an export imported again in another phone language, or told
    its language by other words, adds no second record of the same photo."""
    italian, _ = run(write_whatsapp_txt(tmp_path / "it", ["31/12/23, 21:01 - Ben: <Media omessi>"]))
    english, _ = run(write_whatsapp_txt(tmp_path / "en", ["31/12/23, 21:01 - Ben: <Media omitted>"]))
    assert italian[0].text != english[0].text and italian[0].id == english[0].id


def test_deleted_messages_in_any_wording_are_dropped(tmp_path: Path) -> None:
    deleted = [
        "Este mensaje fue eliminado", "U hebt dit bericht verwijderd", "Mensagem apagada", "Eliminou esta mensagem",
        "Usunąłeś(-ęłaś) tę wiadomość", "Usunęłaś tę wiadomość", "Ați șters acest mesaj", "Acest mesaj a fost şters",
        "QUESTO MESSAGGIO È STATO ELIMINATO.",
    ]  # fmt: skip
    lines = [f"31/12/2023, 21:{i:02d} - Ben: {text}" for i, text in enumerate(deleted)]
    records, _ = run(write_whatsapp_txt(tmp_path, [*lines, "31/12/2023, 22:00 - Ben: ok"]))
    assert [r.text for r in records] == ["ok"]


def test_words_like_the_notes_in_a_message_of_ones_own_stay(tmp_path: Path) -> None:
    own = [
        "l'immagine omessa era sfocata",  # the words, not the note
        "Mensagem apagada?",
        "Ik heb dit bericht verwijderd, sorry",
        "<Media omessi> eccole comunque",
        "ho cambiato idea: vengo anch'io",  # a ": " of one's own, after the author's
        "Plan.pdf • documento omesso, lo rimando",
    ]
    lines = [f"31/12/2023, 21:{i:02d} - Anna: {text}" for i, text in enumerate(own)]
    records, _ = run(write_whatsapp_txt(tmp_path, lines))
    assert [(r.author, r.text) for r in records] == [("Anna", text) for text in own]
    assert not any({"media", "media_omitted", "attachments", "edited"} & r.extra.keys() for r in records)
