"""The docs' code references name functions that exist, at their current lines."""

import os
import re

from conftest import ROOT, run_python


def test_doc_references_resolve_and_line_ranges_are_current():
    result = run_python(["docs/links.py", "--check"], timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_flag_reference_is_generated_from_the_flags():
    result = run_python(["docs/cli.py", "--check"], timeout=120)
    assert result.returncode == 0, result.stderr


def test_docs_have_references():
    with open(os.path.join(ROOT, "docs", "the_training_loop.md")) as f:
        text = f.read()
    references = re.findall(r"\[`([\w/]+\.py): ([\w.]+)`\]", text)
    assert len(references) >= 20
    assert ("trainer/steps.py", "StepFunctions.train_step") in references
