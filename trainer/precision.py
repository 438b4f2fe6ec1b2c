"""Numeric precision of a run, as Keras mixed-precision policies.

    32          float32 everywhere (the tutorial's setting)
    bf16-mixed  bfloat16 compute, float32 variables; logits and loss stay float32. bfloat16 has
                float32's exponent range, so no loss scaling is needed. On a 2-core CPU with
                AVX512_BF16 it trained both CNNs 1.3-1.7x faster with matching loss curves.
"""

import tensorflow as tf

POLICIES = {"32": "float32", "bf16-mixed": "mixed_bfloat16"}


def set_precision(precision: str) -> None:
    """Sets the global Keras dtype policy; layers created afterwards compute in it.

    Raises:
        ValueError: if `precision` is not one of POLICIES.
    """
    if precision not in POLICIES:
        raise ValueError(f"precision ({precision!r}) must be one of {list(POLICIES)}")
    tf.keras.mixed_precision.set_global_policy(POLICIES[precision])
