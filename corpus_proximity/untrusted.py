"""Showing untrusted text (corpus chunks, LLM answers, result files) safely wherever it is shown.

Each helper takes the raw text and returns what is safe for one medium: the terminal through Rich
(markup escaped, control characters dropped), Markdown (every Markdown/HTML metacharacter escaped,
so a name can never become a link, an image or a tag) and Plotly hover text (HTML-escaped).
"""

from __future__ import annotations

import html
import re

from rich.markup import escape

# C0 and C1 controls and DEL, except tab and newline; ESC among them starts terminal escape sequences
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&$:])")


def strip_control(text: str) -> str:
    """``text`` without control characters (tab and newline kept)."""
    return _CONTROL.sub("", str(text))


def term(text: str) -> str:
    """For ``console.print`` / Rich tables: control characters dropped and Rich markup escaped, so
    ``[/dim]`` or an ESC byte in a corpus text prints as itself (or not at all), never as markup."""
    return escape(strip_control(text))


def markdown(text: str) -> str:
    """For ``st.markdown`` and other Markdown: every metacharacter backslash-escaped and newlines as
    spaces, so the text shows literally (no image, link, HTML tag or heading can come of it)."""
    return _MARKDOWN.sub(r"\\\1", strip_control(text).replace("\n", " "))


def hover(text: str) -> str:
    """For Plotly hover text and labels (rendered as HTML by plotly.js): control characters dropped,
    HTML escaped."""
    return html.escape(strip_control(text))
