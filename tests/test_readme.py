"""The README's command table ("## Commands") against the CLI, so the two cannot drift apart.

Every command (walking the click group) has a row; every long option name of the command,
secondary names included (`--no-greedy`), appears in its row, and so does every argument;
the row names no option the command does not have. A new option fails here until the README
lists it.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from charlm.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
# A flag where a word cannot continue it: `--top-k`, `-o`; not the `-` inside `k=v` or `x-y`.
FLAG = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


def walk(group: click.Group, path: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """{'vocab build': command, ...} for every command and group under `group`."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        found[" ".join((*path, name))] = command
        if isinstance(command, click.Group):
            found.update(walk(command, (*path, name)))
    return found


def documented() -> dict[str, click.Command]:
    """The commands that need a row: all but groups that have no options of their own."""
    return {
        name: command
        for name, command in walk(cli).items()
        if not isinstance(command, click.Group) or long_flags(command)
    }


def long_flags(command: click.Command) -> set[str]:
    """Every `--name` of every option, `--no-greedy` style secondary names too; not --help."""
    return {
        flag
        for param in command.params
        if isinstance(param, click.Option)
        for flag in (*param.opts, *param.secondary_opts)
        if flag.startswith("--")
    } - {"--help"}


def all_flags(command: click.Command) -> set[str]:
    """Every spelling the command accepts, short ones (-o) and -h/--help included."""
    params = command.get_params(click.Context(command))
    return {f for p in params if isinstance(p, click.Option) for f in (*p.opts, *p.secondary_opts)}


def command_table() -> dict[str, str]:
    """{command path: the usage in its row's first cell}, e.g. {'plot': 'RUN [-o FILE]'}."""
    text = README.read_text(encoding="utf-8")
    assert "\n## Commands\n" in text, "README.md has no '## Commands' section"
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `charlm "):
            continue
        first = re.split(r"(?<!\\)\|", line)[1].strip()  # cells: split on unescaped pipes
        words = first.strip("`").replace("\\|", "|").split()[1:]  # after "charlm"
        path: list[str] = []
        group: click.Command = cli
        while words and isinstance(group, click.Group) and words[0] in group.commands:
            group = group.commands[words[0]]
            path.append(words.pop(0))
        assert path, f"README row for no charlm command: {line}"
        name = " ".join(path)
        assert name not in rows, f"two README rows for `charlm {name}`"
        rows[name] = " ".join(words)
    return rows


TABLE = command_table()
COMMANDS = documented()


def test_every_command_has_one_row_and_every_row_a_command() -> None:
    assert len(TABLE) >= 6  # the table was found and read (vocab build ... plot)
    assert sorted(TABLE) == sorted(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_row_lists_exactly_the_commands_options(name: str) -> None:
    command, usage = COMMANDS[name], TABLE.get(name, "")
    in_row = set(FLAG.findall(usage))
    missing = sorted(long_flags(command) - in_row)
    assert not missing, f"README row for `charlm {name}` leaves out {missing}"
    unknown = sorted(in_row - all_flags(command))
    assert not unknown, f"README row for `charlm {name}` lists {unknown}, unknown to the CLI"
    for arg in (p for p in command.params if isinstance(p, click.Argument)):
        assert arg.human_readable_name in usage, f"README row for `charlm {name}`: no {arg.name}"


def test_flag_pattern() -> None:
    usage = "CORPUS [-o FILE] [--mode stream|lines] [--set k=v ...] [--greedy|--no-greedy]"
    assert FLAG.findall(usage) == ["-o", "--mode", "--set", "--greedy", "--no-greedy"]
    assert FLAG.findall("runs/<corpus-name>/ x-y 1e-6") == []
