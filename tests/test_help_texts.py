"""`--help` texts are complete (every option says what it does), consistently written (lower
case, like argparse's own lines), and point at the glossary, which explains every term the
reports and the console use."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from weldmon.cli import GLOSSARY_HELP, REGISTRY, main

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
# The jargon the issue found unexplained, and more the reports print.
TERMS = ["MIL", "top-k", "ECE", "PR_AUC", "ROC_AUC", "TUNED-ON", "mode A / mode B", "ONNX twin",
         "kurtosis", "p_defect", "margin", "confidence", "Wilson", "OVERLAP", "degenerate",
         "false-alarm rate", "outbox"]  # fmt: skip


def _options(parser: argparse.ArgumentParser, where: str) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _options(sub, f"{where} {name}")
        elif action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
            out.append((where, action))
    return out


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_option_says_what_it_does_in_lower_case(name: str) -> None:
    module = importlib.import_module(REGISTRY[name][0])
    parser = argparse.ArgumentParser(prog=f"weldmon {name}")
    module.COMMANDS[name].configure(parser)
    for where, action in _options(parser, name):
        label = f"{where} {'/'.join(action.option_strings) or action.dest}"
        assert action.help, f"{label} has no help text"
        first = action.help.split()[0]
        # lower case like argparse's own "show this help message"; acronyms and codes pass
        assert not (first[0].isupper() and not first.isupper()), f"{label}: {action.help!r}"


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_help_ends_by_pointing_at_the_glossary(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    assert capsys.readouterr().out.rstrip().endswith(GLOSSARY_HELP)


def test_the_glossary_explains_every_term_and_is_linked_from_the_readme() -> None:
    text = GLOSSARY.read_text()
    defined = re.findall(r"^- \*\*([^*]+)\*\*", text, re.MULTILINE)
    for term in TERMS:
        assert any(term in d for d in defined), f"the glossary does not define {term}"
    assert "docs/glossary.md" in GLOSSARY_HELP
    assert "(docs/glossary.md)" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_help_opens_with_one_capitalised_sentence(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([name, "--help"])
    text = capsys.readouterr().out
    # usage lines, a blank line, then the description paragraph
    description = text.split("\n\n", 2)[1].replace("\n", " ")
    assert description[0].isupper(), description
    assert description.rstrip().endswith((".", ")")), description
