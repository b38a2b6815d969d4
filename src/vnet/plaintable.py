"""Tables and marked-up lines for `vnet status`, written without rich when the output is plain.

rich costs about 25 ms to import, more than the rest of what `status` prints. When stdout is not a
terminal (a pipe, a file, a script) nothing is coloured, and what rich would print is simple to
write here: the same heavy-headed box, the same title wrapping and justification, the same lines.
A unit test holds the two equal. Anything this module cannot promise to write the way rich would
(a table wider than the page, which rich folds; characters wider than one cell; tabs or newlines
in a cell; an encoding without box characters) is handed to rich, which is imported only then.
Markup is rich's: `[red]drift[/]`; here the tags are left out, as rich leaves them out of plain text.
"""

from __future__ import annotations

import re

# rich's markup tag (rich.markup.RE_TAGS): `[style]`, `[/style]`, `[/]`; a backslash before it escapes it
_TAG = re.compile(r"((\\*)\[([a-z#/@][^[]*?)])")
_WORD = re.compile(r"\s*\S+\s*")  # rich._wrap's word: the word and the whitespace after it
_WHITESPACE_END = re.compile(r"\s+$")
# one cell per character, as rich counts them (rich.cells' single-cell ranges, plus the dashes,
# quotes, ellipsis and arrows vnet writes); anything else goes to rich, which knows wide characters
NARROW_EXTRA = "–—‘’“”…→←"
_NARROW = re.compile(f"[\\x20-\\x7e\\xa0-\\xac\\xae-\\u02ff\\u0370-\\u0482\\u2500-\\u25fc{NARROW_EXTRA}]*")

# rich.box.HEAVY_HEAD
_TOP = ("┏", "━", "┳", "┓")
_HEAD = ("┃", "┃", "┃")
_HEAD_ROW = ("┡", "━", "╇", "┩")
_BODY = ("│", "│", "│")
_BOTTOM = ("└", "─", "┴", "┘")


def plain(markup: str) -> str:
    """The text of rich markup: tags left out, escaped brackets kept (`\\[x]` is `[x]`)."""

    def one(m: re.Match) -> str:
        escapes, tag = m.group(2), m.group(3)
        half, odd = divmod(len(escapes), 2)
        return "\\" * half + (f"[{tag}]" if odd else "")

    return _TAG.sub(one, markup) if "[" in markup else markup


class Table:
    """The part of rich.table.Table that vnet uses: a title, columns, rows of marked-up strings."""

    def __init__(self, title: str = "", title_justify: str = "center") -> None:
        self.title = title
        self.title_justify = title_justify
        self.columns: list[tuple[str, str | None]] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, heading: str, overflow: str | None = None) -> None:
        self.columns.append((heading, overflow))

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(cells))

    def to_rich(self):
        from rich.table import Table as RichTable

        table = RichTable(title=self.title or None, title_justify=self.title_justify)
        for heading, overflow in self.columns:
            table.add_column(heading, **({"overflow": overflow} if overflow else {}))
        for row in self.rows:
            table.add_row(*row)
        return table

    def lines(self, width: int) -> list[str] | None:
        """The table as rich prints it on a page `width` cells wide without colour, or None where
        rich would have to fold it (or measure what is not simple)."""
        if not self.columns:
            return None  # rich prints an empty line; not a table vnet makes
        header = [plain(h) for h, _ in self.columns]
        body = [[plain(c) for c in row] for row in self.rows]
        texts = [self.title, *header, *(c for row in body for c in row)]
        if not all(_simple(t) for t in texts):
            return None
        widths = [max(len(row[i]) for row in (header, *body)) + 2 for i in range(len(header))]
        table_width = sum(widths) + len(widths) + 1
        if table_width > width:
            return None  # rich would shrink the columns and wrap the cells
        out = _wrap(plain(self.title), table_width, self.title_justify) if self.title else []
        out.append(_rule(_TOP, widths))
        out.append(_row(_HEAD, header, widths))
        out.append(_rule(_HEAD_ROW, widths))
        out += [_row(_BODY, row, widths) for row in body]
        out.append(_rule(_BOTTOM, widths))
        return out


def _simple(text: str) -> bool:
    return "\n" not in text and "\t" not in text and _NARROW.fullmatch(text) is not None


def _rule(chars: tuple[str, str, str, str], widths: list[int]) -> str:
    left, line, cross, right = chars
    return left + cross.join(line * w for w in widths) + right


def _row(chars: tuple[str, str, str], cells: list[str], widths: list[int]) -> str:
    left, divider, right = chars
    return left + divider.join(" " + c.ljust(w - 2) + " " for c, w in zip(cells, widths)) + right


def _wrap(text: str, width: int, justify: str | None) -> list[str]:
    """rich's Text.wrap of one line (no newline or tab in it), with `justify` left, center or None."""
    breaks: list[int] = []
    offset = 0
    for m in _WORD.finditer(text):
        start, word = m.start(), m.group(0)
        length = len(word.rstrip())
        if width - offset >= length:
            offset += len(word)
        elif length > width:  # folded, as rich folds a word longer than the line
            while True:
                if start:
                    breaks.append(start)
                if len(word) <= width:
                    offset = len(word)
                    break
                start, word = start + width, word[width:]
        elif offset and start:
            breaks.append(start)
            offset = len(word)
    cuts = [0, *breaks, len(text)]
    lines = []
    for a, b in zip(cuts, cuts[1:]):
        line = text[a:b]
        if len(line) > width:  # rstrip_end: whitespace beyond the width goes
            ws = _WHITESPACE_END.search(line)
            if ws:
                line = line[: len(line) - min(len(ws.group(0)), len(line) - width)]
        if justify == "left":
            line = line[:width].ljust(width)
        elif justify == "center":
            line = line.rstrip()[:width]
            line = " " * ((width - len(line)) // 2) + line
            line = line.ljust(width)
        else:
            line = line[:width]
        lines.append(line)
    return lines


def render(things: list, width: int) -> str | None:
    """What rich's Console(width=width).print(*things) writes on a plain page, each thing a Table
    or a marked-up line; None where rich must write it."""
    out: list[str] = []
    for thing in things:
        if isinstance(thing, Table):
            lines = thing.lines(width)
        elif isinstance(thing, str):
            text = plain(thing)
            lines = _wrap(text, width, None) if _simple(text) else None
        else:
            lines = None  # a rich renderable
        if lines is None:
            return None
        out += lines
    return "".join(line + "\n" for line in out)
