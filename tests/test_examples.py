"""The example loops print what docs/the_training_loop.md shows, and run offline.

Each command the page gives is run as a user runs it (TF_CPP_MIN_LOG_LEVEL unset), offline, on a
dataset prepared on disk (`tiny_images`, tests/tiny_images.py, through `--data_dir` and
`--download=false`), in batches of 16 so that its 58 training examples make a few steps. Its
whole console, standard output and error, must be the lines the page shows: the same lines with
the same words and fields; the numbers are masked, as they come from other data and another CPU.
The programs run at once, in a process each (one strategy per process); a fourth process runs the
one-device loop offline on a data_dir without the dataset.
"""

import concurrent.futures
import shlex

import pytest

import documented
import tiny_images
from conftest import run_python

RUNS = ("one-device", "one-device-eager", "minimal-loop")
OFFLINE = ["--dataset=tiny_images", "--download=false", "--batch_size=16"]


@pytest.fixture(scope="module")
def consoles(tmp_path_factory):
    """{name: (return code, stdout lines, stderr)} of each documented command, run offline."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tiny_images.prepare(data_dir)

    def run(name):
        program, *flags = shlex.split(documented.command(name))
        assert program == "python", documented.command(name)
        result = run_python([*flags, *OFFLINE, f"--data_dir={data_dir}"],
                            env={"TF_CPP_MIN_LOG_LEVEL": None})
        return name, (result.returncode, result.stdout.splitlines(), result.stderr)

    def run_offline_without_the_dataset(name):
        result = run_python(["examples/one_device_loop.py", "--download=false",
                             f"--data_dir={empty_dir}"], env={"TF_CPP_MIN_LOG_LEVEL": None})
        return name, (result.returncode, result.stdout.splitlines(), result.stderr)

    empty_dir = str(tmp_path_factory.mktemp("empty_data_dir"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(RUNS) + 1) as pool:
        runs = [pool.submit(run, name) for name in RUNS]
        runs.append(pool.submit(run_offline_without_the_dataset, "not-prepared"))
        return dict(future.result() for future in runs)


@pytest.mark.parametrize("name", RUNS)
def test_the_console_is_exactly_the_documented_lines(consoles, name):
    returncode, lines, stderr = consoles[name]
    assert returncode == 0, stderr[-3000:]
    assert stderr == ""  # Not a line of TensorFlow's start-up, nor of its libraries' INFO.
    assert [documented.masked(line) for line in lines] == [
        documented.masked(line) for line in documented.output(name)]


def test_the_masked_comparison_still_tells_fields_apart():
    # Guards the comparison above: only the numbers are masked, not the names or their order.
    line = "epoch 1/2 | train_loss 1.6941 | train_accuracy 0.3845 | 30.1 s"
    assert documented.masked(line) == documented.masked(line.replace("1.6941", "0.25"))
    assert documented.masked(line) != documented.masked(line.replace("train_loss", "loss"))
    assert documented.masked(line) != documented.masked(line.replace(" s", " ms"))


def test_offline_a_missing_dataset_is_one_error_line(consoles):
    returncode, lines, stderr = consoles["not-prepared"]
    assert returncode == 1 and not lines
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith("error: dataset 'cifar10' is not prepared in ")
    assert stderr.splitlines()[-1].endswith(
        "and --download=false: point --data_dir at a directory that holds it prepared")
