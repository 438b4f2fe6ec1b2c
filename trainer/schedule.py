"""`RunSchedule`: when things happen in a run, all counted in optimizer steps.

The Trainer's host loop asks it three questions between traced calls: how many steps may the next
call run (it must end exactly where something is due), is validation due now, and is training
over. Answering them from the step count alone keeps every cadence exact, also after a resume.
"""

import dataclasses

from trainer import config as config_lib


def optimizer_steps_per_epoch(batches: int, *, limit_train_batches: int | None = None,
                              accumulate_grad_batches: int = 1) -> int:
    """Optimizer steps in one epoch of `batches` global batches, after the limit and accumulation.

    Raises:
        ValueError: if not even one optimizer step fits in an epoch.
    """
    if limit_train_batches:
        batches = min(batches, limit_train_batches)
    steps = batches // accumulate_grad_batches
    if steps < 1:
        raise ValueError(f"accumulate_grad_batches ({accumulate_grad_batches}) is more than the "
                         f"{batches} training batches of an epoch")
    return steps


@dataclasses.dataclass(frozen=True)
class RunSchedule:
    """The step arithmetic of one `fit`.

    Attributes:
        steps_per_epoch: optimizer steps in one epoch (after limits and accumulation).
        epochs: epochs to train.
        max_steps: stop at this step even mid-epoch (None: after `epochs`).
        steps_per_loop: the most steps one traced call may run.
        val_check_interval: validate at multiples of this step (None: at epoch ends).
        check_val_every_n_epoch: with epoch-end validation, validate every n-th epoch.
        cadences: calls also end at multiples of these (logging, checkpoints; None: unused).
        boundaries: calls also end at these steps (profiling).
    """

    steps_per_epoch: int
    epochs: int
    max_steps: int | None = None
    steps_per_loop: int = 100
    val_check_interval: int | None = None
    check_val_every_n_epoch: int = 1
    cadences: tuple[int | None, ...] = ()
    boundaries: tuple[int, ...] = ()

    @classmethod
    def for_fit(cls, loop: config_lib.LoopConfig, *, steps_per_epoch: int,
                checkpoint_every_n_steps: int | None = None,
                boundaries: tuple[int, ...] = ()) -> "RunSchedule":
        """The schedule of one `fit` with these settings."""
        return cls(steps_per_epoch=steps_per_epoch, epochs=loop.epochs, max_steps=loop.max_steps,
                   steps_per_loop=loop.steps_per_loop, val_check_interval=loop.val_check_interval,
                   check_val_every_n_epoch=loop.check_val_every_n_epoch,
                   cadences=(loop.log_every_n_steps, checkpoint_every_n_steps),
                   boundaries=boundaries)

    @property
    def total_steps(self) -> int:
        """The optimizer steps `fit` plans to take."""
        steps = self.epochs * self.steps_per_epoch
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch_end(self, epoch: int) -> int:
        """The step at which `epoch` (0-based) ends, or `max_steps` if that comes first."""
        return min((epoch + 1) * self.steps_per_epoch, self.total_steps)

    def steps_in_next_loop(self, step: int, epoch: int) -> int:
        """Steps for the next traced call: `steps_per_loop`, cut so that the call ends exactly at
        the epoch end and at the next step where something is due."""
        steps = min(self.steps_per_loop, self.epoch_end(epoch) - step)
        for interval in filter(None, (self.val_check_interval, *self.cadences)):
            steps = min(steps, interval - step % interval)
        for boundary in self.boundaries:
            if boundary > step:
                steps = min(steps, boundary - step)
        return steps

    def validate_after_loop(self, step: int) -> bool:
        """Whether a step-based validation (`val_check_interval`) is due at `step`."""
        return bool(self.val_check_interval) and step % self.val_check_interval == 0

    def validate_at_epoch_end(self, epoch: int, step: int) -> bool:
        """Whether epoch-end validation is due: the epoch ran to its end and it is every n-th,
        or training is over (the last step, also mid-epoch at `max_steps`). With a
        `val_check_interval`, only at the last step, if the interval did not validate there."""
        if self.val_check_interval:
            return step == self.total_steps and step % self.val_check_interval != 0
        completed = step == (epoch + 1) * self.steps_per_epoch
        return ((completed and (epoch + 1) % self.check_val_every_n_epoch == 0)
                or step == self.total_steps)

    def end_reason(self, step: int) -> str:
        """Why a run that nothing stopped early ended at `step`: "max_steps" or "epochs"."""
        return "max_steps" if self.max_steps and step >= self.max_steps else "epochs"

    def finished(self, epoch: int, step: int) -> bool:
        """Whether training is over before `epoch` starts, at `step`."""
        return epoch >= self.epochs or step >= self.total_steps
