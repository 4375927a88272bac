"""Markdown written by authors, made safe to show in the catalog."""

from __future__ import annotations

import re

_IMAGE = re.compile(r"!\[")


def safe_markdown(markdown: str) -> str:
    """Markdown written by an author (a description, a help text, a model's Markdown
    output) as the catalog shows it: every image becomes a plain link, so that nothing is
    fetched from elsewhere when the page opens (a tracking pixel would tell a third party
    who looked, and when). Raw HTML is never rendered (Streamlit escapes it)."""
    # ![alt](url), ![alt][ref] and ![alt]: a link the reader may follow, nothing loaded.
    return _IMAGE.sub("[image: ", markdown)
