"""Flags that check or explain a run instead of training it."""

from absl import flags

EXPLAIN = flags.DEFINE_boolean(
    "explain", False,
    "Print the resolved plan (strategy, devices, workers, replicas, global and per-replica batch, "
    "steps per epoch, where the all-reduce happens, precision, checkpoints, data sharding) and exit "
    "without training.")
SELFTEST = flags.DEFINE_boolean(
    "selftest", False,
    "Instead of training, run a few SGD steps on synthetic data under the configured strategy and "
    "check that the replicas train exactly like one device; prints a PASS/FAIL table and exits "
    "non-zero on any FAIL. Uses --batch_size as the global batch.")
SELFTEST_PERTURB_REPLICA = flags.DEFINE_integer(
    "selftest_perturb_replica", None,
    "Exists to test the self-test: with --selftest, add 0.001 to replica K's copy of one weight "
    "after training (K counts all replicas of all workers from 0), so the replica check must FAIL.",
    lower_bound=0)
