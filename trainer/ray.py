"""`python -m trainer.ray --workers=N -- <flags>`: one multi-worker run on a Ray cluster.

Ray Train's `TensorflowTrainer` starts N worker actors, writes each one's TF_CONFIG and calls
`trainer.main.run` in each with the flags after `--`, unchanged (trainer/cluster/ray_train.py).
Without `--address` it starts a Ray of this machine alone. The flags are checked once here,
before Ray starts. Ray is an optional extra: `pip install ".[ray]"`.
"""

import json
import sys

import flags as run_flags
from trainer.cluster import options
from trainer.cluster import ray_train

EXAMPLE = "python -m trainer.ray --workers=2 -- --model=functional --model_dir=/shared/runs/c10"


def main(argv: list[str]) -> int:
    """Parses the command line, checks the workers' flags once and runs them on Ray; prints the
    chief's results on stdout (one line of JSON); returns the exit status (an error: one
    `error: ...` line, and 1)."""
    parser = options.OptionParser(
        prog="python -m trainer.ray", example=EXAMPLE,
        description="Runs trainer.main as every worker of one multi-worker run on a Ray "
                    "cluster, with Ray Train's TensorflowTrainer.")
    parser.add_argument("--workers", type=int, required=True,
                        help="how many workers train together (>= 1); rank 0 is the chief, "
                             "which writes the files")
    parser.add_argument("--address", default=None,
                        help="the Ray cluster, as ray.init takes it ('auto': the one this "
                             "machine belongs to); default: a Ray of this machine alone")
    parser.add_argument("--cpus_per_worker", type=float, default=1.0,
                        help="CPUs Ray reserves for each worker (> 0)")
    parser.add_argument("--gpus_per_worker", type=float, default=0.0,
                        help="GPUs Ray gives each worker (each trains one replica per GPU)")
    parser.add_argument("--max_failures", type=int, default=0,
                        help="how many times Ray restarts the workers after a failure; each "
                             "restart resumes from the latest checkpoint in --model_dir")
    parser.add_argument("--storage_path", default=None,
                        help="where Ray keeps its records of the run (default: ~/ray_results); "
                             "the run's own files go to --model_dir")
    try:
        args, flags = parser.parse_launcher_args(argv)
        ray_train.check_installed()  # Before the flags: without Ray, nothing else matters.
        run_flags.parse(["trainer.main", *flags])
        results = ray_train.train(
            flags, workers=args.workers, address=args.address,
            cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
            max_failures=args.max_failures, storage_path=args.storage_path)
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
