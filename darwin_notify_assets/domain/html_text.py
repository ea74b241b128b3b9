"""A plain-text part derived from an email's HTML, for templates that have no text body.

Standard library only (``html.parser``): the templates are ours, short and regular, so
blocks, line breaks, list items and links are all a reader of the text part needs.
"""

import re
from html.parser import HTMLParser

_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "div", "dl", "dt", "dd", "fieldset",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "li", "main", "nav", "ol", "p", "pre", "section", "table", "tr", "ul",
    }
)  # fmt: skip
_ITEMS = frozenset({"li", "tr", "dt", "dd"})
_HIDDEN = frozenset({"head", "script", "style", "template", "title"})


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0
        self._links: list[tuple[str | None, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag in _BLOCKS:
            self.out.append("\n" if tag in _ITEMS else "\n\n")
            if tag == "li":
                self.out.append("- ")
        elif tag in ("td", "th"):
            self.out.append("\t")
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.out)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _HIDDEN:
            self._hidden -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS and tag not in _ITEMS:
            self.out.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.out[start:]).strip()
            if href and not href.startswith(("#", "javascript:")) and href != label:
                self.out.append(f" ({href.removeprefix('mailto:')})")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    """The readable text of ``html``: paragraphs apart, list items as ``- ``, each link's
    address after its label; whitespace collapsed."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) if "\t" not in line else line.strip() for line in
             "".join(parser.out).split("\n")]  # fmt: skip
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
