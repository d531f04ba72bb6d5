"""The README against the code and the measurements it quotes: a claim that drifts from either fails here.

Checked: every file it names exists; every command line it shows uses options the command has; every
``--set NAME=VALUE`` names a parameter and a valid value; every method is in its table and every method it names
exists; and every figure quoted beside a cited file under ``docs/`` (a table row, a bullet, a paragraph) appears
in that file or in the summaries of its folder of measurements.
"""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M)


def command_lines(text: str) -> list[str]:
    """Each ``dragkit ...`` command of the bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in code_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()
            for part in re.split(r"&&|\|\|", line):
                words = part.split()
                if "dragkit" in words:
                    out.append(" ".join(words[words.index("dragkit") :]))
    return out


def test_every_file_the_readme_names_exists():
    named = set(re.findall(r"(?<![\w/.])((?:docs|tests|scripts|src|\.ci)/[\w./-]*\w)", README))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"


def test_every_command_line_uses_options_its_command_has():
    import typer.main

    from dragkit.interfaces.cli import app

    group = typer.main.get_command(app)
    lines = command_lines(README)
    assert len(lines) >= 10
    for line in lines:
        words = shlex.split(line)[1:]
        if not words or words[0].startswith("-"):
            opts = {o for p in group.params for o in p.opts}
            unknown = [w for w in words if w.startswith("--") and w.split("=")[0] not in opts]
        else:
            assert words[0] in group.commands, f"{line!r}: no command {words[0]!r}"
            command = group.commands[words[0]]
            opts = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
            unknown = [w for w in words[1:] if w.startswith("-") and w.split("=")[0] not in opts]
        assert not unknown, f"{line!r}: unknown options {unknown}"


def test_every_set_names_a_parameter_with_a_valid_value():
    import dragkit.methods  # noqa: F401 - registers every part's parameters
    from dragkit.core import params as P

    found = re.findall(r"--set\s+`?([a-z_]+)=([\w.|-]+)", README) + re.findall(r"`([a-z_]+)=([\w.-]+)`", README)
    assert len(found) >= 10
    for name, value in found:
        if name.isupper() or value.isupper() or name in ("weights_only",):
            continue  # NAME=VALUE, sam_model=ID_OR_FOLDER: placeholders; torch.load(weights_only=True): Python
        assert name in P.REGISTRY, f"README sets {name}, which is no parameter"
        for one in value.split("|"):  # autocast=bf16|fp16: each choice
            try:
                P.lookup(name).parse(one)
            except P.ParameterError:  # shown on purpose: the README must say it is refused
                assert f"`{name}={one}` is a one-line error" in README, f"README's {name}={one} is refused"


def test_every_method_is_in_the_table_and_every_named_method_exists():
    from dragkit.methods import METHODS

    table = set(re.findall(r"^\| `([\w-]+)` \|", README, flags=re.M))
    assert table == set(METHODS)
    named = set(re.findall(r"--method\s+([\w-]+)", README)) - {"NAME", "A", "B"}
    assert named <= set(METHODS), named - set(METHODS)


def citing_chunks() -> list[str]:
    """The README's table rows, bullets and paragraphs that cite a file under ``docs/``."""
    chunks = []
    for para in re.split(r"\n\s*\n", README):
        if para.lstrip().startswith("|"):
            chunks += [line for line in para.splitlines() if line.lstrip().startswith("| ")]
        elif not para.startswith("```"):
            chunks += re.split(r"\n(?=- )", para)
    return [c for c in chunks if "docs/" in c]


@functools.cache
def doc_text(name: str) -> str:
    """A cited doc's text, and for a doc with a folder of the same name, the summaries in that folder (its
    Markdown files; per-drag tables would match almost any figure). Read once however often it is cited."""
    path = ROOT / name
    text = [path.read_text(errors="replace")] if path.is_file() else []
    folder = path if path.is_dir() else path.with_suffix("") if path.suffix == ".md" else None
    if folder is not None and folder.is_dir():
        text += [f.read_text(errors="replace") for f in sorted(folder.rglob("*.md"))]
    return "\n".join(text)


def cited_text(row: str) -> str:
    """What a row cites: each named doc (:func:`doc_text`)."""
    return "\n".join(doc_text(name) for name in re.findall(r"(docs/[\w./-]*\w)", row))


@pytest.mark.parametrize("chunk", citing_chunks(), ids=lambda c: c.strip("| -")[:40])
def test_every_figure_the_readme_quotes_is_in_what_it_cites(chunk):
    figures = set(re.findall(r"(?<![\w.])(\d+\.\d+)(?![\w.])", chunk))
    missing = sorted(f for f in figures if f not in cited_text(chunk))
    assert not missing, f"figures quoted in the README not found in the files it cites there: {missing}"
