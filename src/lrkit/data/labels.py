"""Labels for items: from a regex on the file name, the parent folder, a function, or a CSV.

A labeller maps a path to a list of label strings (one for single-label data) or raises
`LabelError` with the reason, which the pipeline reports as junk instead of crashing.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

Labeller = Callable[[Path], list[str]]


class LabelError(ValueError):
    """An item has no usable label."""


def regex_labeller(pattern: str) -> Labeller:
    """Label = the first group of `pattern` searched in the file name (with extension)."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(
            f"label_re '{pattern}' is not a valid regular expression: {error}"
        ) from None
    if compiled.groups < 1:
        raise ValueError(f"label_re '{pattern}' needs a group, e.g. r'^(.+)_\\d+'")

    def label(path: Path) -> list[str]:
        match = compiled.search(path.name)
        if match is None or not match.group(1):
            raise LabelError(f"file name does not match label_re '{pattern}'")
        return [match.group(1)]

    return label


def folder_labeller(path: Path) -> list[str]:
    """Label = the name of the folder holding the file."""
    return [path.parent.name]


def func_labeller(func: Callable[[Path], str | Sequence[str]]) -> Labeller:
    """Label(s) from a user function of the path; a str is one label, a list several."""

    def label(path: Path) -> list[str]:
        try:
            value = func(path)
        except Exception as err:  # the user's function: report its failure as the reason
            raise LabelError(f"label function failed: {err!r}") from err
        labels = [value] if isinstance(value, str) else [str(v) for v in value]
        if not labels or any(not v for v in labels):
            raise LabelError(f"label function returned {value!r}")
        return labels

    return label


def read_label_csv(
    csv_path: str | Path,
    fn_col: int | str = 0,
    label_col: int | str = 1,
    label_delim: str | None = None,
    valid_col: int | str | None = None,
) -> list[tuple[str, list[str], bool]]:
    """Rows of (file name, labels, is_valid) from a CSV with a header row.

    The file must be UTF-8; a byte-order mark (as Excel writes) is dropped from the header.
    """
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{csv_path} is not UTF-8 (byte {err.start}: {err.reason}); "
            "save it as UTF-8 (in Excel: 'CSV UTF-8') and try again"
        ) from None
    if not rows:
        raise ValueError(f"{csv_path} is empty; it needs a header row and one row per file")
    header, body = rows[0], rows[1:]

    def column(key: int | str) -> int:
        if isinstance(key, int):
            if not 0 <= key < len(header):
                raise ValueError(f"{csv_path} has {len(header)} columns, no column {key}")
            return key
        if key not in header:
            raise ValueError(f"{csv_path} has no column {key!r}; its columns are {header}")
        return header.index(key)

    fn_i, label_i = column(fn_col), column(label_col)
    valid_i = column(valid_col) if valid_col is not None else None
    out = []
    for line, row in enumerate(body, start=2):
        if not row:
            continue
        if len(row) <= max(fn_i, label_i, valid_i or 0):
            raise ValueError(f"{csv_path} line {line} has {len(row)} fields: {row}")
        text = row[label_i].strip()
        labels = text.split(label_delim) if label_delim is not None else [text]
        labels = [v.strip() for v in labels if v.strip()]
        is_valid = valid_i is not None and row[valid_i].strip().lower() in ("1", "true", "yes")
        out.append((row[fn_i].strip(), labels, is_valid))
    return out


def make_vocab(labels: Iterable[Sequence[str]]) -> list[str]:
    """Sorted distinct label strings: the class index order, stable across runs."""
    return sorted({v for item in labels for v in item})
