"""gpt.flags: a config dataclass becomes command-line flags, with its own defaults, types and checks."""

from dataclasses import dataclass, field

import pytest

from gpt.flags import parse_dataclass


@dataclass
class Demo:
    size: str = field(default="tiny", metadata={"choices": ("tiny", "small"), "help": "model size"})
    steps: int = 10
    lr: float = 1e-3
    compile: bool = False
    threads: int | None = None
    prompt_len: tuple[int, int] = (16, 128)
    sweep: tuple[int, ...] = (1, 2, 4)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")


def test_defaults_come_from_the_dataclass():
    assert parse_dataclass(Demo, []) == Demo()


def test_every_kind_of_field_parses():
    argv = ["--size", "small", "--steps", "3", "--lr", "0.5", "--compile", "--threads", "2"]
    argv += ["--prompt-len", "4", "8", "--sweep", "8", "16"]
    assert parse_dataclass(Demo, argv) == Demo("small", 3, 0.5, True, 2, (4, 8), (8, 16))
    assert parse_dataclass(Demo, ["--no-compile", "--threads", "none", "--sweep"]) == Demo(sweep=())


def test_other_defaults_such_as_a_preset():
    assert parse_dataclass(Demo, ["--lr", "2"], defaults=Demo(steps=7)) == Demo(steps=7, lr=2.0)


def test_bad_values_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_dataclass(Demo, ["--size", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_dataclass(Demo, ["--prompt-len", "4"])  # exactly two values
    with pytest.raises(ValueError, match="steps must be >= 1"):
        parse_dataclass(Demo, ["--steps", "0"])


def test_help_names_the_defaults(capsys):
    with pytest.raises(SystemExit):
        parse_dataclass(Demo, ["--help"], prog="demo")
    text = capsys.readouterr().out
    assert "model size (default: 'tiny')" in text and "--no-compile" in text and "default: 16 128" in text
