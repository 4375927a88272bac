"""Text written by authors, made safe to show in the catalog.

Streamlit renders Markdown almost everywhere: in ``st.markdown``, titles, captions,
alerts, tooltips (``help=``) and the labels of widgets, expanders and buttons, images
included. An author's words reach all of them (a model's title and description, its
settings' titles, descriptions and messages, its secrets' descriptions, the names and
contents of the files its runs write, the messages its code raises), so every one goes
through one of these on its way to the page:

- `safe_markdown` for text meant as Markdown (a description, a help text, a message);
- `plain` for text meant as written (a title, a label, a file name);
- `code` for a name shown as code.

None of them lets the page fetch anything from elsewhere when it opens (a tracking
pixel would tell a third party who looked, and when) or hold raw HTML. Streamlit also
shows raw HTML as text unless ``unsafe_allow_html=True``, which the catalog never
passes with an author's text.

Example:
    >>> safe_markdown("Maps ![logo](https://t.example/p.gif) <img src=x>")
    'Maps [image: logo](https://t.example/p.gif) &lt;img src=x>'
    >>> plain("Rain *now* ![x](u)")
    'Rain \\\\*now\\\\* !\\\\[x\\\\](u)'
"""

from __future__ import annotations

import re

_IMAGE = re.compile(r"!\[")
# The start of an HTML tag, comment or declaration (not an autolink such as <https://…>).
_TAG = re.compile(r"<(?=[A-Za-z][A-Za-z0-9-]*(?:[\s/>]|$)|/[A-Za-z]|[!?])")
# Code, where Markdown shows ``<`` as it is: fenced blocks and inline code spans.
_CODE = re.compile(
    r"^ {0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^ {0,3}\1[`~]*[ \t]*$|\Z)"  # a fenced block
    r"|(?<!`)(`+)(?!`)(?:(?!\n[ \t]*\n).)+?(?<!`)\2(?!`)",  # a span, within its paragraph
    re.M | re.S,
)
# What makes Markdown of plain text: emphasis, links and images, code, strikethrough,
# maths, tables, headings and quotes; ``&`` (entities) and ``<`` (HTML) apart.
_MARKUP = re.compile(r"[\\`*_\[\]~$|#>&<]")


def safe_markdown(markdown: str) -> str:
    """Markdown written by an author, as the catalog shows it: every image becomes a
    plain link (nothing is fetched when the page opens) and every HTML tag shows as
    text. The rest (emphasis, links, lists, code) is kept."""
    # ![alt](url), ![alt][ref] and ![alt]: a link the reader may follow, nothing loaded.
    # Everywhere, code included: a reader of code sees "[image: " and nothing is missed.
    unloaded = _IMAGE.sub("[image: ", markdown)
    shown: list[str] = []
    start = 0
    for found in _CODE.finditer(unloaded):
        shown += [_TAG.sub("&lt;", unloaded[start : found.start()]), found.group()]
        start = found.end()
    shown.append(_TAG.sub("&lt;", unloaded[start:]))
    return "".join(shown)


def plain(text: str) -> str:
    """``text`` shown as written wherever Streamlit reads Markdown: a title, a widget's
    or an expander's label, a file name."""
    return _MARKUP.sub(_escape, text)


def _escape(found: re.Match[str]) -> str:
    mark = found.group()
    return "&lt;" if mark == "<" else "\\" + mark


def code(text: str) -> str:
    """``text`` as inline code: fenced by more backticks than it holds in a row, so that
    nothing in it can end the code early and be read as Markdown."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
