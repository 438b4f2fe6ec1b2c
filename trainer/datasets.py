"""`DistributedData`: a DataModule's datasets, split across replicas by the strategy, built once.

`strategy.distribute_datasets_from_function` calls the DataModule once per input pipeline (one
per worker) with a `tf.distribute.InputContext`; each replica then takes its own batches from
its worker's pipeline.
"""

from trainer import distribute


def prepare(datamodule, strategy, *, overfit_batches: int = 0) -> None:
    """Prepares and sets up `datamodule` (narrowed to `overfit_batches` training batches, if
    any) and checks that its global batches split evenly over the strategy's replicas."""
    datamodule.prepare_data()
    datamodule.setup()
    if overfit_batches:
        datamodule.overfit(overfit_batches)
    check_batch_sizes(datamodule, strategy.num_replicas_in_sync)


def check_batch_sizes(datamodule, replicas: int) -> None:
    """Every replica gets an equal share of each full global batch, in training and evaluation.

    Raises:
        ValueError: naming the setting, its value and the rule.
    """
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(datamodule, name, None)
        if value is not None and value % replicas:
            raise ValueError(f"{name} ({value}) must be divisible by the number of replicas "
                             f"({replicas}): each replica gets {name} / replicas examples")


class DistributedData:
    """Builds and caches the distributed datasets of one DataModule under one strategy.

    Args:
        strategy: the Trainer's strategy.
        datamodule: a set-up `DataModule`.
        limits: `limits(stage)` is the most global batches per pass of "val" or "test" (None:
            all, 0: none), e.g. `LoopConfig.limit`.
        micro_batches: global batches per optimizer step (gradient accumulation).
    """

    def __init__(self, strategy, datamodule, *, limits, micro_batches: int = 1):
        self.strategy = strategy
        self.datamodule = datamodule
        self.limits = limits
        self.micro_batches = micro_batches
        self._cache: dict[tuple, object] = {}

    def training(self, *, start_epoch: int, steps_done: int, steps_per_epoch: int):
        """The endless training data from `start_epoch`, without its first `steps_done` steps."""
        return self.strategy.distribute_datasets_from_function(
            lambda ctx: self.datamodule.train_dataset(
                ctx, start_epoch=start_epoch, skip_batches=steps_done * self.micro_batches,
                batches_per_epoch=steps_per_epoch * self.micro_batches))

    def evaluation(self, stage: str, limit: int | None = None):
        """`stage`'s data ("val", "test" or "predict"), at most `limit` global batches; None
        when the DataModule has no such data or `limit` is 0."""
        if (stage, limit) not in self._cache:
            def make(ctx):
                return self.datamodule.evaluation_dataset(stage, ctx, limit_batches=limit)

            # This worker's own pipeline: with --cache_dir, building one caches it, and another
            # context (e.g. one pipeline for the whole split) would cache data nobody reads.
            exists = limit != 0 and make(distribute.input_context(self.strategy)) is not None
            self._cache[stage, limit] = (
                self.strategy.distribute_datasets_from_function(make) if exists else None)
        return self._cache[stage, limit]

    def has(self, stage: str) -> bool:
        """Whether `stage` has data to run on, after its limit."""
        return self.evaluation(stage, self.limits(stage)) is not None

    def require(self, stage: str) -> None:
        if not self.has(stage):
            raise ValueError(f"the datamodule has no {stage} dataset (its {stage}_split is empty, "
                             f"or limit_{stage}_batches is 0)")
