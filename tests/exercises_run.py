"""The 2-replica "break it" exercises of docs/the_training_loop.md, each kept and broken, in one
process; prints one JSON report for tests/test_exercises.py.

Run as a subprocess (one MirroredStrategy per process): `python tests/exercises_run.py`. Each
exercise's change is applied here as the reader would make it: a method replaced (the loss
denominator, clipping) or the lines of examples/break_it.py moved (the optimizer's scope). The
report holds what the reader would see: the printed lines, or the error; and how many
MirroredStrategy objects the process created.
"""

import contextlib
import io
import json
import os
import sys

from trainer import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BREAK_IT = os.path.join(ROOT, "examples", "break_it.py")

# The optimizer's two lines in break_it.scope, inside the scope, and where the exercise moves them.
OPTIMIZER_LINES = ("        optimizer = tf.keras.optimizers.Adam(1e-2)\n"
                   "        optimizer.build(model.trainable_variables)\n")
AFTER_THE_SCOPE = "    train_loop = minimal_loop.make_train_loop("


def printed(function, *args):
    """(what `function(*args)` printed, its result)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = function(*args)
    return out.getvalue(), result


@contextlib.contextmanager
def replaced(owner, name, replacement):
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def break_it_with_optimizer_outside_scope():
    """examples/break_it.py with the optimizer's lines moved out of `with strategy.scope():`."""
    with open(BREAK_IT) as f:
        source = f.read()
    if source.count(OPTIMIZER_LINES) != 1 or source.count(AFTER_THE_SCOPE) != 1:
        raise AssertionError("examples/break_it.py no longer has the lines the scope exercise "
                             "moves: update the exercise and tests/exercises_run.py")
    dedented = "".join(line[4:] + "\n" for line in OPTIMIZER_LINES.splitlines())
    source = source.replace(OPTIMIZER_LINES, "").replace(AFTER_THE_SCOPE,
                                                           dedented + AFTER_THE_SCOPE)
    namespace = {"__name__": "break_it_edited", "__file__": BREAK_IT}
    exec(compile(source, BREAK_IT, "exec"), namespace)  # pylint: disable=exec-used
    return namespace


def clip_then_reduce(self):
    """StepFunctions.reduce_gradients as exercise 3 edits it: each replica clips its own
    gradients, BEFORE they are summed (the mistake)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from trainer import optimization  # pylint: disable=import-outside-toplevel
    from trainer import steps  # pylint: disable=import-outside-toplevel
    context = tf.distribute.get_replica_context()
    grads = self.accumulator.take()
    if self.config.gradient_clip_val is not None:
        grads = optimization.clip(grads, self.config.gradient_clip_val,
                                  self.config.gradient_clip_algorithm)
    grads = context.all_reduce(steps.SUM, grads)
    if self.loss_scale:
        grads = self.loss_scale.unscale(grads)
    return grads, optimization.all_finite(grads)


def main():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    # Counts the MirroredStrategy objects this process creates: the self-test and every fit
    # below must run under the one created here (docs/pitfalls.md#15).
    created, original_init = [], tf.distribute.MirroredStrategy.__init__

    def counted(self, *args, **kwargs):
        created.append(self)
        original_init(self, *args, **kwargs)

    tf.distribute.MirroredStrategy.__init__ = counted
    strategy = distribute.create_strategy("mirrored", cpu_devices=2)
    import trainer  # pylint: disable=import-outside-toplevel
    from examples import break_it  # pylint: disable=import-outside-toplevel
    from trainer import steps  # pylint: disable=import-outside-toplevel
    from trainer.cli import selftest  # pylint: disable=import-outside-toplevel
    report = {}

    # 1. The loss divided by the replica's own batch: a plain mean of its per-example losses.
    report["selftest_kept"] = selftest.format_table(selftest.run(strategy, global_batch_size=32),
                                                    strategy)

    def replica_mean(self, per_example_loss):
        return tf.reduce_mean(tf.cast(per_example_loss, tf.float32))

    with replaced(trainer.Module, "average_over_global_batch", replica_mean):
        checks = selftest.run(strategy, global_batch_size=32)
    report["selftest_broken"] = selftest.format_table(checks, strategy)
    report["selftest_broken_passed"] = [check.passed for check in checks]

    # 2. The optimizer created outside the scope: in the minimal loop, then under the Trainer.
    report["scope_kept"] = printed(break_it.scope, strategy)
    report["scope_broken"] = printed(break_it_with_optimizer_outside_scope()["scope"], strategy)
    report["scope_trainer"] = printed(break_it.scope_trainer, strategy)

    # 3. Clipping each replica's own gradients, before the all-reduce.
    report["clip_kept"] = printed(break_it.clip, strategy)
    with replaced(steps.StepFunctions, "reduce_gradients", clip_then_reduce):
        report["clip_broken"] = printed(break_it.clip, strategy)
    report["mirrored_strategies_created"] = len(created)
    print(json.dumps(report))


if __name__ == "__main__":
    sys.exit(main())
