"""A small report builder: headings, paragraphs, tables and figures, written side by side as
Markdown (figures as files next to it) and as one self-contained HTML page (figures inline)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table


@dataclass
class Report:
    """Blocks in order; `write` renders them both ways."""

    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, rows: list[list[str]]) -> None:
        """A table whose first row is the header."""
        self.blocks.append(("table", rows))

    def settings(self, values: Mapping[str, Any], title: str = "Settings") -> None:
        """A heading and a two-column table (setting, value) of `values`; nested mappings
        become dotted names ("config.epochs"), see `settings_rows`."""
        self.heading(title)
        self.table([["setting", "value"], *settings_rows(values)])

    def figure(self, path: str | Path, caption: str) -> None:
        """A PNG already written to disk (in or below the report's folder)."""
        self.blocks.append(("figure", (Path(path), caption)))

    def write(self, folder: str | Path, name: str = "report") -> tuple[Path, Path]:
        """Write `name`.md and `name`.html into `folder`; returns both paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md_path, html_path = folder / f"{name}.md", folder / f"{name}.html"
        md_path.write_text(self._markdown(folder))
        html_path.write_text(self._html())
        return md_path, html_path

    def _markdown(self, folder: Path) -> str:
        lines = [f"# {self.title}", ""]
        for kind, content in self.blocks:
            if kind == "heading":
                lines += [f"## {content}", ""]
            elif kind == "paragraph":
                lines += [str(content), ""]
            elif kind == "table":
                header, *body = content  # type: ignore[misc]
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(row) + " |" for row in body]
                lines.append("")
            else:
                path, caption = content  # type: ignore[misc]
                target = (
                    path.resolve().relative_to(folder.resolve()) if _inside(path, folder) else path
                )
                lines += [f"![{caption}]({target.as_posix()})", "", f"*{caption}*", ""]
        return "\n".join(lines)

    def _html(self) -> str:
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.3em .6em;"
            "text-align:right}td:first-child,th:first-child{text-align:left}"
            "img{max-width:100%}figcaption{color:#555}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, content in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{html.escape(str(content))}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(str(content))}</p>")
            elif kind == "table":
                header, *body = content  # type: ignore[misc]
                parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header))
                for row in body:
                    cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
                    parts.append(f"<tr>{cells}</tr>")
                parts.append("</table>")
            else:
                path, caption = content  # type: ignore[misc]
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(
                    f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'>"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """ "1 epoch", "2 epochs", "0 epochs"; `many` for nouns that do not just take an s
    ("1 batch", plural(3, "batch", "batches") -> "3 batches")."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def settings_rows(values: Mapping[str, Any], prefix: str = "") -> list[list[str]]:
    """[name, value] rows of a (nested) mapping, in its order: nested mappings flattened to
    dotted names, lists joined by commas, floats in %g, None as "-"."""
    rows: list[list[str]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows += settings_rows(value, f"{name}.")
        else:
            rows.append([name, setting_text(value)])
    return rows


def setting_text(value: Any) -> str:
    """One setting as a table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(setting_text(item) for item in value) or "-"
    if isinstance(value, Mapping):
        return "-"  # an empty mapping
    return str(value)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def rich_table(rows: list[list[str]], title: str | None = None) -> Table:
    """The same rows (header first) as a rich Table for the terminal."""
    header, *body = rows
    table = Table(title=title)
    for index, name in enumerate(header):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in body:
        table.add_row(*row)
    return table
