"""vnet.plaintable writes what rich writes on a plain page (status's tables without importing rich),
and hands rich what it cannot write the same way."""

from __future__ import annotations

import io
import random

import pytest
from rich.cells import cell_len
from rich.console import Console

from vnet import plaintable
from vnet.plaintable import Table, render


def rich_text(things: list, width: int) -> str:
    buf = io.StringIO()
    console = Console(width=width, file=buf)
    for thing in things:
        console.print(thing.to_rich() if isinstance(thing, Table) else thing, highlight=False)
    return buf.getvalue()


def table(title: str, columns: list[str], rows: list[list[str]], justify: str = "center") -> Table:
    t = Table(title=title, title_justify=justify)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    return t


STATUS_LIKE = [
    table("network lan0: nat, 192.168.223.0/24, gateway 192.168.223.1, uplink eth0, bridge vb-lab-lan0 (up), DHCP 192.168.223.100–192.168.223.200",
          ["member", "kind", "MAC", "address", "host interface", "state"],
          [["vm1", "tap", "52:54:00:21:34:56", "-", "vt-lab-vm1", "[green]ok[/]"],
           ["c1", "netns", "52:54:00:54:76:66", "192.168.223.10 (lease, 3500s left, [red]OUTSIDE the subnet[/])", "ve-lab-c1 (hashed)", "[yellow]missing[/]"]],
          justify="left"),
    table("port forwards", ["proto", "port", "to", "packets", "bytes"], [["tcp", "8080", "192.168.223.10:80", "0", "0"]]),
    table("VMs", ["VM", "state", "pid", "accel", "memory", "cpus", "display"], []),
    "[red]drift[/]: address 192.168.223.1/24 (prefix: 16 → 24; peers: ['a', 'b'])",
    "lab in netns x-host: [green]in sync[/]",
    "  lab is not applied here: `vnet apply` makes it (17 objects) — a note",
    "",
]


@pytest.mark.parametrize("width", [160, 120, 100, 90, 80])
def test_status_like_output_is_riches(width):
    ours = render(STATUS_LIKE, width)
    if width == 160:
        assert ours is not None
    if ours is not None:
        assert ours == rich_text(STATUS_LIKE, width)


def test_long_lines_and_titles_wrap_and_fold_as_rich_does():
    words = ["a", "bb", "ccc", "x" * 30, "-", "192.168.0.1/24,", "→", "“q”", "\\[not a tag]", "[bold]b[/bold]", "  "]
    rnd = random.Random(11)
    for _ in range(400):
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(0, 30)))
        title = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 20)))
        cols = [rnd.choice(words[:6]) for _ in range(rnd.randint(1, 4))]
        rows = [[rnd.choice(words) for _ in cols] for _ in range(rnd.randint(0, 3))]
        width = rnd.randint(12, 100)
        things = [table(title, cols, rows, rnd.choice(["left", "center"])), text]
        ours = render(things, width)
        if ours is not None:
            assert ours == rich_text(things, width), (things, width)


def test_what_rich_must_write_is_left_to_rich():
    wide = table("t", ["a"], [["x" * 200]])
    assert render([wide], 160) is None  # rich folds the cell
    assert render([table("t", ["a"], [["宽字"]])], 160) is None  # wide characters
    assert render([table("t", ["a"], [["two\nlines"]])], 160) is None
    assert render(["a\tb"], 160) is None
    assert render([object()], 160) is None  # a rich renderable
    assert render([table("t", ["a"], [["x" * 150]])], 160) is not None


def test_markup_is_left_out_as_rich_leaves_it_out():
    assert plaintable.plain("[red]drift[/]: x") == "drift: x"
    assert plaintable.plain("\\[red] stays") == "[red] stays"
    assert plaintable.plain("['a'] and [1, 2] are data") == "['a'] and [1, 2] are data"


def test_the_extra_narrow_characters_are_one_cell_for_rich():
    assert all(cell_len(c) == 1 for c in plaintable.NARROW_EXTRA)
