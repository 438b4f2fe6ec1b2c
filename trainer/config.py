"""The Trainer's settings, as two frozen dataclasses that check themselves when created.

    LoopConfig   what the loop does: how long it trains, how much data each stage sees, when it
                 validates and logs (the host loop, trainer/trainer.py and trainer/schedule.py)
    StepConfig   how one optimizer step is computed: precision, clipping, accumulation, anomaly
                 checks, XLA, eager mode (the traced steps, trainer/steps.py)

`Trainer(epochs=5, gradient_clip_val=1.0)` is the friendly front door: `split_options` sorts
such flat keyword arguments into the two configs. A run that varies a setting makes a new config
with `dataclasses.replace` (a `fast_dev_run` is `LoopConfig.for_fast_dev_run()`), so a config
never changes under the code that read it.
"""

import dataclasses

from trainer import precision as precision_lib

CLIP_ALGORITHMS = ("norm", "value")


def _at_least(minimum: int, **values) -> None:
    for name, value in values.items():
        if value is not None and value < minimum:
            rule = "must be at least 1" if minimum == 1 else f"must be >= {minimum}"
            raise ValueError(f"{name} ({value}) {rule}")


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What the loop does. Steps are optimizer steps; batches are global batches.

    Attributes:
        epochs: passes over the training data.
        max_steps: stop after this many optimizer steps, even mid-epoch (None: no limit).
        steps_per_loop: at most this many training steps per `tf.function` call; more steps per
            call means fewer Python->graph dispatches and host syncs.
        log_every_n_steps: loop calls also end at multiples of this many steps, so that
            `on_train_batch_end` (and the loggers) see those steps.
        limit_train_batches / limit_val_batches / limit_test_batches: at most this many global
            batches per epoch / validation / test (None: all; 0 turns validation or test off).
        val_check_interval: validate every this many optimizer steps, across epoch ends,
            instead of at epoch ends (None: at epoch ends).
        check_val_every_n_epoch: validate at the end of every n-th epoch (and at the last step).
        num_sanity_val_steps: validation batches run before training, so that a broken
            `validation_step` fails before a long training run instead of after its first epoch.
        overfit_batches: train and validate on the same first n training batches, unshuffled.
        fast_dev_run: one training step, one validation and one test batch; the Trainer then
            runs `for_fast_dev_run()` and writes no checkpoints or files.
    """

    epochs: int = 10
    max_steps: int | None = None
    steps_per_loop: int = 100
    log_every_n_steps: int = 50
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None
    limit_test_batches: int | None = None
    val_check_interval: int | None = None
    check_val_every_n_epoch: int = 1
    num_sanity_val_steps: int = 2
    overfit_batches: int = 0
    fast_dev_run: bool = False

    def __post_init__(self):
        _at_least(1, epochs=self.epochs, max_steps=self.max_steps,
                  steps_per_loop=self.steps_per_loop, log_every_n_steps=self.log_every_n_steps,
                  limit_train_batches=self.limit_train_batches,
                  val_check_interval=self.val_check_interval,
                  check_val_every_n_epoch=self.check_val_every_n_epoch)
        _at_least(0, limit_val_batches=self.limit_val_batches,
                  limit_test_batches=self.limit_test_batches,
                  num_sanity_val_steps=self.num_sanity_val_steps,
                  overfit_batches=self.overfit_batches)

    def for_fast_dev_run(self) -> "LoopConfig":
        """This config cut to one batch of everything, with no sanity check."""
        return dataclasses.replace(self, epochs=1, max_steps=1, limit_val_batches=1,
                                   limit_test_batches=1, num_sanity_val_steps=0)

    def limit(self, stage: str) -> int | None:
        """The batch limit of "train", "val" or "test"."""
        return getattr(self, f"limit_{stage}_batches")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """How one optimizer step is computed.

    Attributes:
        precision: "32", "bf16-mixed" or "16-mixed"; must match the policy the module was built
            under (`precision.set_precision` before building it). "16-mixed" adds dynamic loss
            scaling that skips a step on every replica when the summed gradients overflow.
        gradient_clip_val: clip the gradients summed over replicas to this global norm or value
            (None: no clipping).
        gradient_clip_algorithm: "norm" (`tf.clip_by_global_norm`) or "value" (`tf.clip_by_value`).
        accumulate_grad_batches: micro-batches per optimizer step; each contributes its
            gradients, so one step sees `accumulate_grad_batches` x the global batch.
        detect_anomaly: stop with `AnomalyDetected`, naming the step, when the loss or the
            gradients hold NaN or Inf; that step is not applied and no checkpoint is written.
        jit_compile: compile the per-replica step with XLA. Off by default: XLA made both CNNs
            20-50% slower on a 2-core CPU, and Keras' `fit` turns it off under a strategy
            because of known crashes. Measure first.
        run_eagerly: run the step functions as plain Python (no `tf.function`), so that a
            debugger can stop inside `training_step`. Much slower.
    """

    precision: str = "32"
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    detect_anomaly: bool = False
    jit_compile: bool = False
    run_eagerly: bool = False

    def __post_init__(self):
        if self.precision not in precision_lib.POLICIES:
            raise ValueError(f"precision ({self.precision!r}) must be one of "
                             f"{list(precision_lib.POLICIES)}")
        if self.gradient_clip_val is not None and not self.gradient_clip_val > 0:
            raise ValueError(f"gradient_clip_val ({self.gradient_clip_val}) must be positive")
        if self.gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise ValueError(f"gradient_clip_algorithm ({self.gradient_clip_algorithm!r}) must "
                             f"be one of {list(CLIP_ALGORITHMS)}")
        _at_least(1, accumulate_grad_batches=self.accumulate_grad_batches)

    @property
    def reduces_gradients_itself(self) -> bool:
        """Whether the step must see the gradients summed over replicas before applying them:
        to clip the sum, to accumulate micro-batches, to unscale and check fp16 gradients, or
        to check every step for NaN/Inf. Otherwise `apply_gradients` does the all-reduce."""
        return (self.gradient_clip_val is not None or self.accumulate_grad_batches > 1
                or self.precision == "16-mixed" or self.detect_anomaly)


def split_options(loop_config: LoopConfig | None, step_config: StepConfig | None,
                  options: dict) -> tuple[LoopConfig, StepConfig]:
    """Sorts flat keyword arguments (`epochs=5`, `gradient_clip_val=1.0`) into the two configs,
    on top of the given ones (or the defaults).

    Raises:
        TypeError: naming an argument that belongs to neither config.
    """
    loop_fields = {field.name for field in dataclasses.fields(LoopConfig)}
    step_fields = {field.name for field in dataclasses.fields(StepConfig)}
    unknown = sorted(set(options) - loop_fields - step_fields)
    if unknown:
        raise TypeError(f"Trainer() got unexpected keyword argument(s) {unknown}; the settings are "
                        f"those of LoopConfig {sorted(loop_fields)} and StepConfig "
                        f"{sorted(step_fields)}")
    loop_config = dataclasses.replace(loop_config or LoopConfig(),
                                      **{k: v for k, v in options.items() if k in loop_fields})
    step_config = dataclasses.replace(step_config or StepConfig(),
                                      **{k: v for k, v in options.items() if k in step_fields})
    return loop_config, step_config
