"""`python -m trainer.launch --workers=N -- <flags>`: one multi-worker run on this host.

Starts `python -m trainer.main <flags>` N times with a TF_CONFIG each on 127.0.0.1, shows the
chief's output, forwards Ctrl-C and SIGTERM to every worker, and stops them all when one fails
(trainer/cluster/launcher.py). The flags after `--` are the ones every worker of any cluster gets,
unchanged; they are checked once here, before any worker starts.

The launcher's own options are parsed with argparse, apart from absl's flags, so that nothing of
the workers' command line is read as the launcher's, or the other way round.
"""

import argparse
import sys

from trainer import main as trainer_main
from trainer.cluster import launcher

EXAMPLE = "python -m trainer.launch --workers=2 -- --model=functional --epochs=2"


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # One `error: ...` line, as the workers' own errors, not usage.
        raise ValueError(f"{message} (usage: {EXAMPLE}; --help lists the options)")


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Splits `argv` (without the program's name) at `--`: the launcher's options, checked, and
    the workers' flags.

    Raises:
        ValueError: naming an option of the launcher that is unknown or out of range.
    """
    parser = _ArgumentParser(
        prog="python -m trainer.launch",
        description="Runs python -m trainer.main as every worker of one multi-worker run, as "
                    "processes of this host, each with its own TF_CONFIG on 127.0.0.1.",
        epilog=f"example: {EXAMPLE}. See docs/multi_worker.md.", allow_abbrev=False)
    parser.add_argument("--workers", type=int, required=True,
                        help="how many worker processes train together (>= 1); worker 0 is the "
                             "chief, which writes the files")
    parser.add_argument("--evaluator", action="store_true",
                        help="also start the evaluator task, which validates each checkpoint as "
                             "it appears (see --evaluate_checkpoints)")
    parser.add_argument("--port", type=int, default=None,
                        help="the first of the consecutive ports of 127.0.0.1 the processes "
                             "listen on (default: ports that are free)")
    own, flags = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (
        argv, [])
    args, unknown = parser.parse_known_args(own)
    if unknown:
        raise ValueError(f"{unknown[0]} is not an option of the launcher: give the flags of "
                         f"trainer.main after --, e.g. {EXAMPLE}")
    launcher.cluster_tasks(args.workers)  # Checks --workers before anything else.
    return args, flags


def main(argv: list[str]) -> int:
    """Parses the command line, checks the workers' flags once and launches; returns the exit
    status (a bad option or flag: one `error: ...` line and 1)."""
    try:
        args, flags = parse_args(argv)
        trainer_main.parse_flags(["trainer.main", *flags])
        return launcher.launch(flags, workers=args.workers, evaluator=args.evaluator,
                               port=args.port)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
