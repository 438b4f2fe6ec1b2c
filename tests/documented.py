"""What docs/the_training_loop.md shows: its commands and the output it promises for each.

A command the tests run is the first indented line after `<!-- command: NAME -->`; the output
the page promises is the fenced block after `<!-- expected: NAME -->`.
"""

import os
import re

from conftest import ROOT

PAGE = os.path.join(ROOT, "docs", "the_training_loop.md")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _page() -> str:
    with open(PAGE) as f:
        return f.read()


def output(name: str) -> list[str]:
    """The non-blank lines of the page's fenced block marked `<!-- expected: name -->`."""
    match = re.search(rf"<!-- expected: {re.escape(name)} -->\s*```[a-z]*\n(.*?)```", _page(),
                      re.S)
    assert match, f"docs/the_training_loop.md has no expected output {name!r}"
    return [line for line in match.group(1).splitlines() if line.strip()]


def command(name: str) -> str:
    """The command the page gives under `<!-- command: name -->`."""
    match = re.search(rf"<!-- command: {re.escape(name)} -->\n+ {{4}}(\S.*)\n", _page())
    assert match, f"docs/the_training_loop.md has no command {name!r}"
    return match.group(1)


def commands(program: str) -> list[str]:
    """Every command of the page, in its indented code lines, that runs `program`."""
    return re.findall(rf"^ {{4}}(python {re.escape(program)}\b.*)$", _page(), re.M)


def masked(line: str) -> str:
    """`line` with every number replaced by `#`: the words and fields, not the values."""
    return NUMBER.sub("#", " ".join(line.split()))
