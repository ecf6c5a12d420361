"""README's commands stay true: every ``virnucpro`` command in its code blocks (the walk-through, the
Snakemake rule and the Nextflow process included) parses with virnucpro's own argument parser. They
are parsed, not run: placeholders of the workflow engines (``{input}``, ``${task.cpus}``) become
stand-in values."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from virnucpro.cli import build_parser
from virnucpro.errors import InputError

README = Path(__file__).resolve().parents[1] / "README.md"
NUMERIC = {"threads", "task.cpus"}          # placeholders that stand for a number


def code_blocks(text: str) -> list[tuple[str, str, str]]:
    """(section heading, language, body) of every fenced code block."""
    blocks, heading = [], ""
    for m in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            blocks.append((heading, m.group(2), m.group(3)))
    return blocks


def commands(body: str) -> list[str]:
    """Every virnucpro command line in a code block: continuation lines joined, ``&&``/``;``/``|``
    chains split, quotes of a Snakemake ``shell:`` string and comments dropped."""
    found = []
    for line in body.replace("\\\n", " ").splitlines():
        for part in re.split(r"&&|;|\|(?!\w)", line):
            m = re.search(r"(?:python3? -m )?\bvirnucpro (\S.*)", part)
            if m and not part.strip().startswith(("import", "from", "`")):
                found.append(m.group(1).split("  #")[0].strip().rstrip("\"'"))
    return found


def argv_of(command: str) -> list[str]:
    def stand_in(m: re.Match) -> str:
        return "4" if m.group(1) in NUMERIC else f"STANDIN_{m.group(1).replace('.', '_')}"
    return shlex.split(re.sub(r"\$?\{([\w.]+)\}", stand_in, command), comments=True)


DOCUMENTED = [(heading, lang, cmd) for heading, lang, body in code_blocks(README.read_text())
              for cmd in commands(body)]


def test_the_readme_documents_a_real_sample_and_workflows():
    headings = {h for h, _, _ in DOCUMENTED}
    assert "A real sample, step by step" in headings and "Using virnucpro in a workflow" in headings, headings
    walk = [c for h, _, c in DOCUMENTED if h == "A real sample, step by step"]
    assert any(c.startswith("models download") for c in walk), walk
    assert any(c.startswith("predict") and ".fastq.gz" in c for c in walk), walk
    flows = {lang: c for h, lang, c in DOCUMENTED if h == "Using virnucpro in a workflow"}
    assert set(flows) >= {"python", "groovy"}, f"a Snakemake rule and a Nextflow process: {flows}"
    for lang, c in flows.items():
        assert c.startswith("predict") and "--threads" in c, f"{lang}: {c}"
    text = README.read_text()
    for code in ("0 done", "2 bad input", "1 an internal error", "130 interrupted"):
        assert code in text, f"the workflow section should state exit code {code!r}"


@pytest.mark.parametrize("heading, lang, command", DOCUMENTED, ids=[c[:60] for _, _, c in DOCUMENTED])
def test_documented_command_parses(heading, lang, command):
    argv = argv_of(command)
    if {"--help", "-h", "--version"} & set(argv):
        return
    try:
        args = build_parser().parse_args(argv)
    except InputError as exc:
        pytest.fail(f"README ({heading}): `virnucpro {command}` does not parse: {exc}")
    assert getattr(args, "func", None), f"`virnucpro {command}` names no command"
    if "--threads" in argv or "-t" in argv:
        assert isinstance(args.threads, int) and args.threads >= 1, args.threads
