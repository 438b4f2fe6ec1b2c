"""docs/pitfalls.md keeps its promise: every rule names the tests that prove it, and they exist.

Rule 18, which no other file covers, is proved here too.
"""

import os
import re

import pytest

from conftest import ROOT, input_context, quadrant_datamodule

PAGE = os.path.join(ROOT, "docs", "pitfalls.md")


def _proofs() -> dict[int, str]:
    """{rule number: the text of its **Proof.** paragraph}."""
    with open(PAGE) as f:
        rules = re.split(r'<a id="(\d+)"></a>', f.read())[1:]
    proofs = {}
    for number, text in zip(rules[::2], rules[1::2]):
        proof = re.search(r"\*\*Proof\.\*\*(.*?)(?:\n\n|$)", text, re.S)
        proofs[int(number)] = proof.group(1) if proof else ""
    return proofs


def test_the_page_has_its_rules():
    assert sorted(_proofs()) == list(range(1, 22))


@pytest.mark.parametrize("rule", range(1, 22))
def test_every_rule_names_a_test_that_exists(rule):
    tests = re.findall(r"`(tests/\w+\.py)::(\w+)`", " ".join(_proofs()[rule].split()))
    assert tests, f"rule {rule} names no test in its Proof paragraph"
    for path, name in tests:
        with open(os.path.join(ROOT, path)) as f:
            assert re.search(rf"^def {name}\(", f.read(), re.M), f"rule {rule}: {path}::{name}"


def test_every_input_pipeline_runs_without_autotuning():
    # Rule 18: an autotuned iterator, destroyed, waits out its tuning thread's back-off.
    datamodule = quadrant_datamodule()
    datamodule.setup()
    ctx = input_context()
    pipelines = {"train": datamodule.train_dataset(ctx), "val": datamodule.val_dataset(ctx),
                 "test": datamodule.test_dataset(ctx), "predict": datamodule.predict_dataset(ctx)}
    for stage, dataset in pipelines.items():
        assert dataset.options().autotune.enabled is False, stage
