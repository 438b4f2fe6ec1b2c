"""The command lines of the launchers: `python -m trainer.<launcher> <options> -- <flags>`.

A launcher's own options come before `--` and are parsed with argparse, apart from absl's flags;
what follows `--` is the workers' command line, passed on untouched. So nothing of the workers'
flags is read as the launcher's, or the other way round.
"""

import argparse


class OptionParser(argparse.ArgumentParser):
    """argparse, with an error as one exception (the launcher prints one `error: ...` line)
    instead of the usage text and exit status 2."""

    def __init__(self, *, prog: str, description: str, example: str):
        super().__init__(prog=prog, description=description, allow_abbrev=False,
                         epilog=f"example: {example}. See docs/multi_worker.md.")
        self.example = example

    def error(self, message):
        raise ValueError(f"{message} (usage: {self.example}; --help lists the options)")

    def parse_launcher_args(self, argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """Splits `argv` (without the program's name) at the first `--`: the launcher's options,
        parsed, and the workers' flags.

        Raises:
            ValueError: for an option the launcher does not know (a worker flag before `--`)
                or a value it refuses.
        """
        split = argv.index("--") if "--" in argv else len(argv)
        args, unknown = self.parse_known_args(argv[:split])
        if unknown:
            raise ValueError(f"{unknown[0]} is not an option of {self.prog}: give the flags of "
                             f"trainer.main after --, e.g. {self.example}")
        return args, argv[split + 1:]
