"""The docs and the CLI agree: every `layerscope COMMAND --flag` that README.md or docs/
shows is a flag of that command (docs/layers.md once showed `layers --rule`, which did not
exist)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerscope.client.cli import COMMANDS_BY_NAME, build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_lines(text: str) -> list[str]:
    """The code in a page: fenced blocks (continuation lines joined) and inline spans."""
    out = []
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    for block in fenced:
        out.extend(block.replace("\\\n", " ").splitlines())
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    out.extend(s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", rest))
    return out


def shown_flags() -> list[tuple[str, str, str]]:
    """(page, command, flag) for every flag shown after `layerscope COMMAND`."""
    found = []
    for page in PAGES:
        for line in command_lines(page.read_text()):
            for part in re.split(r"(?=\blayerscope [a-z]+)", line):
                m = re.match(r"layerscope ([a-z]+)\b(.*)", part)
                if not m or m.group(1) not in COMMANDS_BY_NAME or m.group(1) == "serve":
                    continue  # serve's flags belong to the server's own parser
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2)):
                    found.append((page.name, m.group(1), flag))
    return found


def options_of(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {o for a in sub.choices[command]._actions for o in a.option_strings}


def test_the_docs_show_commands_with_flags():
    assert len(shown_flags()) > 20  # the scan finds what the pages show


@pytest.mark.parametrize("page,command,flag", sorted(set(shown_flags())))
def test_every_flag_the_docs_show_exists(page, command, flag):
    assert flag in options_of(command), f"{page}: `layerscope {command} {flag}`"
