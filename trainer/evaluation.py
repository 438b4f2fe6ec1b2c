"""Evaluation passes, the host side: validation, test and prediction, every example once.

The traced loops are trainer/steps.py's (`eval_loop`, `predict_step`). Around each pass this
module creates the stage's logged metrics on first use, gives every replica the same BatchNorm
statistics, starts a fresh iterator and reads the results once, at the end.
"""

import time

import numpy as np


class Evaluator:
    """Runs the evaluation passes of one Trainer set-up.

    Args:
        strategy: the Trainer's strategy.
        module: the `Module`, built, with its optimizer.
        datamodule: the set-up `DataModule` (to create the logged metrics from its datasets).
        data: the Trainer's `DistributedData`, which builds each stage's distributed dataset.
        step_functions: the Trainer's `StepFunctions`, which trace the loops.
    """

    def __init__(self, strategy, module, datamodule, data, step_functions):
        self.strategy, self.module, self.datamodule = strategy, module, datamodule
        self.data, self.step_functions = data, step_functions

    def evaluate(self, stage: str, limit: int | None = None) -> dict[str, float]:
        """Runs the stage's step hook ("val" or "test") over its dataset, at most `limit` global
        batches; returns the `<stage>_*` means and `<stage>_seconds`."""
        module, functions = self.module, self.step_functions
        hook = {"val": module.validation_step, "test": module.test_step}[stage]
        if not module.logbook.metrics[stage]:
            make_dataset = {"val": self.datamodule.val_dataset,
                            "test": self.datamodule.test_dataset}[stage]
            module.logbook.create_for(self.strategy, stage, hook, make_dataset)
        self.average_replica_copies()
        module.logbook.reset(stage)
        eval_loop = functions.traced(stage, lambda iterator: functions.eval_loop(stage, hook,
                                                                                 iterator))
        start_time = time.perf_counter()
        eval_loop(iter(self.data.evaluation(stage, limit)))  # Fresh: every example exactly once.
        return {**module.logbook.results(stage),
                f"{stage}_seconds": time.perf_counter() - start_time}

    def sanity_check(self, batches: int) -> dict[str, float]:
        """Runs `batches` validation batches before training and returns their means; the
        validation metrics are reset afterwards, so the first real validation starts clean."""
        logs = self.evaluate("val", limit=batches)
        self.module.logbook.reset("val")
        return logs

    def predict(self, stage: str = "predict") -> np.ndarray:
        """`predict_step`'s outputs over the stage's dataset, as `strategy.gather` orders them."""
        dataset = self.data.evaluation(stage)
        if dataset is None:
            raise ValueError(f"the datamodule has no {stage} data ({stage}_dataset is None)")
        predict_step = self.step_functions.traced("predict", self.step_functions.predict_step)
        return np.concatenate([predict_step(batch).numpy() for batch in dataset])

    def average_replica_copies(self) -> None:
        """Every replica gets the mean of the replicas' BatchNorm statistics before the model is
        evaluated or saved: without synchronized BatchNorm the copies drift apart, and only one
        copy would be evaluated or saved (docs/pitfalls.md#8). A no-op on one replica."""
        functions = self.step_functions
        if self.strategy.num_replicas_in_sync > 1 and functions.averaged_variables:
            functions.traced("average_replica_copies", functions.average_replica_copies)()
