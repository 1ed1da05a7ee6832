"""The report page, written as Markdown and as self-contained HTML at once (figures inlined as data URIs)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

import bias_ray.report.tables as tables


def _inline(text: str) -> str:
    """Escape for HTML, then `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")


class Page:
    """The report as Markdown and HTML at once: every block goes to both."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def section(self, anchor: str, title: str) -> None:
        if self.html:
            self.html.append("</section>")
        self.md += ["", f'<a id="{anchor}"></a>', "", f"## {title}", ""]
        self.html.append(f'<section id="{anchor}"><h2>{html.escape(title)}</h2>')

    def links(self, sections: list[tuple[str, str]]) -> None:
        self.md += ["Sections: " + " · ".join(f"[{t}](#{a})" for a, t in sections), ""]
        self.html.append("<p>Sections: " + " · ".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in sections)
                         + "</p>")

    def heading(self, title: str) -> None:
        self.md += ["", f"### {title}", ""]
        self.html.append(f"<h3>{_inline(title)}</h3>")

    def text(self, text: str) -> None:
        self.md += [text, ""]
        self.html.append(f"<p>{_inline(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md += [f"- {s}" for s in items] + [""]
        self.html.append("<ul>" + "".join(f"<li>{_inline(s)}</li>" for s in items) + "</ul>")

    def table(self, frame: pd.DataFrame, cls: str) -> None:
        self.md += [tables.markdown_table(frame), ""]
        self.html.append(tables.html_table(frame, cls))

    def image(self, path: Path) -> None:
        self.md += [f"![{path.stem}]({path.name})", ""]
        self.html.append(_img(path))

    def close(self) -> None:
        self.html.append("</section>")
