"""Matrix message contents: replies as `m.notice` (bots do not answer notices, so no loops), edits, HTML.

The model's text is rendered from Markdown with raw HTML disabled: whatever it writes, it cannot inject
markup into the person's client.
"""

from __future__ import annotations

import html
from typing import Any

from markdown_it import MarkdownIt

from bridge.messages import Citation, Image, OutgoingReply

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False})
DRAFT_MARK = " …"


def permalink(room_id: str, event_id: str | None = None) -> str:
    return f"https://matrix.to/#/{room_id}/{event_id}" if event_id else f"https://matrix.to/#/{room_id}"


def _citation_html(citation: Citation) -> str:
    label = html.escape(citation.label())
    link = citation.link or ""
    if link.startswith("$") and citation.source.startswith("matrix:!"):
        link = permalink(citation.source.removeprefix("matrix:"), link)
    if link.startswith(("https://", "http://")):
        return f'<li><a href="{html.escape(link, quote=True)}">{label}</a></li>'
    return f"<li>{label}</li>"


def to_html(text: str, citations: list[Citation]) -> str:
    body = _MARKDOWN.render(text).strip()
    if citations:
        items = "".join(_citation_html(c) for c in citations)
        body += f"<p><strong>Sources:</strong></p><ul>{items}</ul>"
    return body


def notice(text: str, citations: list[Citation] | None = None, plain: str | None = None) -> dict[str, Any]:
    return {
        "msgtype": "m.notice",
        "body": plain if plain is not None else text,
        "format": "org.matrix.custom.html",
        "formatted_body": to_html(text, citations or []),
    }


def relation(extra: dict[str, Any], in_reply_to: str | None) -> dict[str, Any]:
    """In the question's thread if it was in one, else as a reply to the question."""
    event_id = extra.get("event_id") or in_reply_to
    thread_root = extra.get("thread_root")
    if thread_root:
        return {
            "rel_type": "m.thread",
            "event_id": thread_root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": event_id},
        }
    return {"m.in_reply_to": {"event_id": event_id}} if event_id else {}


def new_message(body: dict[str, Any], extra: dict[str, Any], in_reply_to: str | None) -> dict[str, Any]:
    content = dict(body)
    related = relation(extra, in_reply_to)
    if related:
        content["m.relates_to"] = related
    sender = extra.get("sender")
    content["m.mentions"] = {"user_ids": [sender]} if sender else {}
    return content


def image(reply: OutgoingReply, picture: Image, url: str, keys: dict[str, Any] | None) -> dict[str, Any]:
    """An m.image event beside the reply's text (in its thread, replying to the same question); in an encrypted
    room the upload is encrypted and `file` carries its key (`keys`)."""
    width, height = picture.size
    info = {"mimetype": "image/png", "size": len(picture.data), "w": width, "h": height}
    content: dict[str, Any] = {
        "msgtype": "m.image", "body": picture.alt, "filename": picture.name, "info": info,
        "m.mentions": {},  # the text already notified the person
    }  # fmt: skip
    if related := relation(reply.extra, reply.in_reply_to):
        content["m.relates_to"] = related
    if keys is None:
        content["url"] = url
    else:
        content["file"] = {**keys, "url": url, "mimetype": "image/png"}
    return content


def edit(original_event_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """An `m.replace` of an earlier message; clients show `m.new_content`, older ones the `* ` fallback."""
    return {
        "msgtype": body["msgtype"],
        "body": "* " + body["body"],
        "format": body["format"],
        "formatted_body": "* " + body["formatted_body"],
        "m.new_content": body,
        "m.mentions": {},  # an edit does not notify again
        "m.relates_to": {"rel_type": "m.replace", "event_id": original_event_id},
    }


def final_reply(reply: OutgoingReply) -> dict[str, Any]:
    body = notice(reply.text, reply.citations, plain=reply.render_plain())
    if reply.edit_token:
        return edit(reply.edit_token, body)
    return new_message(body, reply.extra, reply.in_reply_to)


UNDECRYPTABLE = (
    "I received an encrypted message from you that I cannot read yet: my device ({device}) has not "
    "received its key. Please verify my device or share your room keys with it (in Element: open my "
    "profile, choose Sessions, then Verify; or re-send the message once verified). I will answer as soon "
    "as the key arrives."
)
