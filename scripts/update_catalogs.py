"""Bring the message catalogs up to date with the code: every text marked with `say(...)` or `N_(...)` in bridge/
and adapters/ goes into bridge/language/locale/confide.pot and each language's confide.po (new texts empty, to be
translated; translations of texts that are gone are dropped). tests/test_catalogs.py fails until every one is
translated.

    .venv/bin/python scripts/update_catalogs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALE = ROOT / "bridge" / "language" / "locale"
KEYWORDS = {"say": None, "N_": None}  # the first argument is the text


def extracted() -> Catalog:
    template = Catalog(project="Confide", domain="confide", charset="utf-8")
    for package in ("bridge", "adapters"):
        found = extract_from_dir(str(ROOT / package), method_map=[("**.py", "python")], keywords=KEYWORDS)
        for _filename, _lineno, message, _comments, context in found:
            template.add(message, context=context)  # no locations: a line moved is no change of the catalog
    return template


def main() -> None:
    from bridge.language.catalog import REPLY_LANGUAGES, SOURCE_LANGUAGE

    template = extracted()
    with (LOCALE / "confide.pot").open("wb") as out:
        write_po(out, template, omit_header=True, sort_output=True, width=120)
    for language in (lang for lang in REPLY_LANGUAGES if lang != SOURCE_LANGUAGE):
        path = LOCALE / language / "LC_MESSAGES" / "confide.po"
        path.parent.mkdir(parents=True, exist_ok=True)
        catalog = Catalog(locale=language, domain="confide", charset="utf-8")
        if path.exists():
            with path.open("rb") as handle:
                catalog = read_po(handle, locale=language, domain="confide")
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with path.open("wb") as out:
            write_po(out, catalog, omit_header=True, sort_output=True, width=120, include_previous=False)
        missing = sum(1 for m in catalog if m.id and not m.string)
        print(f"{language}: {len(catalog) - 1} texts, {missing} to translate", file=sys.stderr)


if __name__ == "__main__":
    main()
