"""The lines a command prints for a person when it ends."""

from __future__ import annotations

from dataclasses import dataclass

from magicanimate_cli.summary import as_text


@dataclass
class Plain:
    output: str
    grid: str | None = None

    def to_dict(self) -> dict:
        return {"output": self.output, "grid": self.grid}


class Lines(Plain):
    def for_humans(self) -> dict:
        return {"wrote": self.output, "note": "[red]not markup[/red]"}


class Table(Plain):
    def for_humans(self):
        from rich.table import Table as RichTable

        table = RichTable("clip", "psnr")
        table.add_row(self.output, "31.20")
        return table


def test_fields_are_key_value_lines_without_empty_ones():
    assert as_text(Plain("out/a b.mp4")) == "output: out/a b.mp4\n"


def test_for_humans_wins_and_brackets_in_values_are_printed_as_they_are():
    assert as_text(Lines("out.mp4")) == "wrote: out.mp4\nnote: [red]not markup[/red]\n"


def test_a_table_is_laid_out_for_the_width():
    narrow, wide = as_text(Table("x" * 60), width=40), as_text(Table("x" * 60), width=100)
    assert max(map(len, narrow.splitlines())) <= 40 < max(map(len, wide.splitlines()))
    assert "31.20" in narrow and "x" * 60 in wide and "\x1b[" not in narrow + wide


def test_a_newline_in_a_value_does_not_split_its_line():
    text = as_text(Plain("out\nput.mp4"))
    assert text.splitlines() == ["output: out\\nput.mp4"]


def test_a_list_is_a_block_of_lines_each_kept_on_its_own():
    class Block(Plain):
        def for_humans(self) -> dict:
            return {"ready": "yes", "checks": ["  ok    python", "  warn  gpu", "  bad\nname"]}

    assert as_text(Block("x")).splitlines() == ["ready: yes", "checks:", "  ok    python", "  warn  gpu", "  bad\\nname"]


def test_sizes_boxes_and_transforms_are_one_line_each_and_empty_lists_are_left_out():
    # crop's sizes and boxes and align's transform were blocks of one number a line, or a dict's repr
    class Result(Plain):
        def to_dict(self) -> dict:
            return {"output": self.output, "source_size": [64, 48], "crop_box": [0.5, 0, 48.5, 48],
                    "transform": {"scale": 0.82, "shift": [1.7, 7.5], "anchor": "feet"}, "notes": [], "ok": True}

    assert as_text(Result("c.mp4")).splitlines() == [
        "output: c.mp4", "source_size: 64, 48", "crop_box: 0.5, 0, 48.5, 48",
        "transform: scale=0.82, shift=[1.7, 7.5], anchor=feet", "ok: True"]


def test_a_tuple_of_lines_is_a_block_too_and_an_empty_one_is_left_out():
    # AnimateResult.warnings is a tuple (the result is frozen): "warnings: ()" was printed for none
    class Result(Plain):
        def __init__(self, warnings):
            super().__init__("a.mp4")
            self.warnings = warnings

        def to_dict(self) -> dict:
            return {"output": self.output, "warnings": self.warnings}

    assert as_text(Result(())).splitlines() == ["output: a.mp4"]
    assert as_text(Result(("poses.mp4: not DensePose",))).splitlines() == ["output: a.mp4", "warnings:", "poses.mp4: not DensePose"]
