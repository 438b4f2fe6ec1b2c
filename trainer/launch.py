"""`python -m trainer.launch --workers=N -- <flags>`: one multi-worker run on this host.

Starts `python -m trainer.main <flags>` N times with a TF_CONFIG each on 127.0.0.1, shows the
chief's output, forwards Ctrl-C and SIGTERM to every worker, and stops them all when one fails
(trainer/cluster/launcher.py). The flags after `--` are the ones every worker of any cluster gets,
unchanged; they are checked once here, before any worker starts.
"""

import sys

import flags as run_flags
from trainer.cluster import launcher
from trainer.cluster import options

EXAMPLE = "python -m trainer.launch --workers=2 -- --model=functional --epochs=2"


def main(argv: list[str]) -> int:
    """Parses the command line, checks the workers' flags once and launches; returns the exit
    status (a bad option or flag: one `error: ...` line, and 1)."""
    parser = options.OptionParser(
        prog="python -m trainer.launch", example=EXAMPLE,
        description="Runs python -m trainer.main as every worker of one multi-worker run, as "
                    "processes of this host, each with its own TF_CONFIG on 127.0.0.1.")
    parser.add_argument("--workers", type=int, required=True,
                        help="how many worker processes train together (>= 1); worker 0 is the "
                             "chief, which writes the files")
    parser.add_argument("--evaluator", action="store_true",
                        help="also start the evaluator task, which validates each checkpoint as "
                             "it appears (see --evaluate_checkpoints)")
    parser.add_argument("--port", type=int, default=None,
                        help="the first of the consecutive ports of 127.0.0.1 the processes "
                             "listen on (default: ports that are free)")
    try:
        args, flags = parser.parse_launcher_args(argv)
        launcher.cluster_tasks(args.workers)  # --workers first: it costs no import.
        run_flags.parse(["trainer.main", *flags])
        return launcher.launch(flags, workers=args.workers, evaluator=args.evaluator,
                               port=args.port)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
