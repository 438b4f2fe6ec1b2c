"""A check that absl's own flag bounds cannot make."""

import math

from absl import flags


def require_finite(*holders: flags.FlagHolder) -> None:
    """Makes nan and inf errors for these float flags.

    absl's `lower_bound` and `upper_bound` let nan through (every comparison with nan is false),
    and an unbounded side lets inf through: `--learning_rate=nan` would otherwise train on NaN.
    """
    for holder in holders:
        flags.register_validator(holder, lambda value: value is None or math.isfinite(value),
                                 message="must be a finite number, not nan or inf")
