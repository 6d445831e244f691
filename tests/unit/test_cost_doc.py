"""docs/cost.md: every `customer-context cost` command it shows prints what the page says it prints."""

from __future__ import annotations

import re
import shlex

import pytest
from customer_context_devtools import cli

from tests.conftest import REPO

DOC = (REPO / "docs" / "cost.md").read_text()
BLOCKS = re.findall(r"```console\n\$ (customer-context cost[^\n]*)\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_page_shows_the_example_and_its_variants() -> None:
    commands = [command for command, _ in BLOCKS]
    assert "customer-context cost" in commands and len(commands) >= 3


@pytest.mark.parametrize(("command", "shown"), BLOCKS, ids=[c for c, _ in BLOCKS])
def test_each_command_prints_what_the_page_shows(command: str, shown: str, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # bench/results and template.yaml, as a reader runs it
    assert cli.main(shlex.split(command)[1:]) == 0
    printed = capsys.readouterr().out.rstrip("\n").split("\n")
    lines = shown.rstrip("\n").split("\n")
    if lines[-1] == "…":  # the page shows the head of the output
        lines = lines[:-1]
    assert printed[: len(lines)] == lines, (f"docs/cost.md is out of date: run `{command}` and paste its output")


def test_the_table_totals_are_the_commands_totals(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    rows = re.findall(r"^\| [^|]+ \| `(customer-context cost[^`]*)` \| (\$[\d,.]+) \|$", DOC, flags=re.MULTILINE)
    assert len(rows) >= 5
    for command, total in rows:
        assert cli.main(shlex.split(command)[1:]) == 0
        assert capsys.readouterr().out.split("\n")[0].endswith(f": {total}"), command
