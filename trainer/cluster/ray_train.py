"""Ray Train: the workers of one multi-worker run as actors of a Ray cluster.

`python -m trainer.ray --workers=N -- <flags>` (trainer/ray.py) hands the run to Ray Train's
`TensorflowTrainer`. Ray places N worker actors on the cluster's nodes, writes each one's
`TF_CONFIG` (rank k is worker k; worker 0, the chief, writes the files) and calls the training
function in each: here `trainer.main.run(["trainer.main", *flags])`, the command line unchanged.
The training is the project's own, on `MultiWorkerMirroredStrategy`, as under any launcher.

- Files. The run writes its checkpoints and outputs to `--model_dir` as always; Ray's own
  checkpoint storage is not used. On a cluster of several machines, `--model_dir` (and
  `--data_dir`) must be storage that every node sees, as for any multi-worker run.
- Failures. With `max_failures` > 0, Ray starts the worker group again after a worker fails,
  and the run resumes from the latest checkpoint in `--model_dir`. A worker's error (a flag
  every worker refuses, say) comes back as one line, not N.
- Signals. Ray calls the training function in a thread that is not the main thread, where
  Python cannot handle signals: stopping the driver ends the workers without the save on
  SIGTERM that the other launchers give; `--checkpoint_every_steps` bounds what is lost.
- The code. Each worker imports this project: on a local Ray it finds it where the driver does
  (`PYTHONPATH`); on a cluster of several machines, install it on every node (deploy/Dockerfile).

Ray is an optional extra (`pip install ".[ray]"`); only this module imports it.
"""

import importlib.util
import json
import logging
import os
import tempfile

# What the workers get of the driver's environment (on this machine they inherit all of it): the
# level of TensorFlow's own log lines (by default 2, errors only, as in trainer/cli/quiet.py),
# and Ray Train's print() left alone (Ray's own would log every printed line a second time).
_WORKER_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
_RESULTS_FILE = "results.json"
INSTALL_HINT = 'Ray is not installed: pip install ".[ray]" (Ray Train with TensorFlow)'


def check_installed() -> None:
    """Raises RuntimeError, saying how to install Ray, if it is not installed. Imports nothing:
    Ray reads some settings from the environment when it is first imported (see `train`)."""
    if importlib.util.find_spec("ray") is None:
        raise RuntimeError(INSTALL_HINT)


def _import_ray():
    """Ray, with Ray Train's TensorflowTrainer imported; RuntimeError if they cannot be."""
    try:
        import ray  # pylint: disable=import-outside-toplevel
        import ray.train.tensorflow  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as error:
        raise RuntimeError(f"{INSTALL_HINT} ({error})") from None
    return ray


def train(flags: list[str], *, workers: int, address: str | None = None,
          cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
          max_failures: int = 0, storage_path: str | None = None) -> dict:
    """Runs `trainer.main` with `flags` as every worker of a Ray Train run; returns the chief's
    results (those of `<model_dir>/results.json`).

    Args:
        flags: the flags every worker gets, unchanged.
        workers: how many workers train together (>= 1).
        address: the Ray cluster to run on, as `ray.init` takes it ("auto": the cluster this
            machine belongs to); None starts a Ray of this machine alone, on 127.0.0.1.
        cpus_per_worker, gpus_per_worker: what Ray reserves for each worker; with GPUs, each
            worker trains one replica per GPU it is given.
        max_failures: how many times Ray starts the workers again after one fails.
        storage_path: where Ray keeps its records of the run (None: Ray's default,
            ~/ray_results); on several machines, storage that all of them see.

    Raises:
        ValueError: for a bad `workers`, `cpus_per_worker` or `gpus_per_worker`.
        RuntimeError: if Ray is not installed, or with the first worker's error, once.
    """
    if workers < 1:
        raise ValueError(f"workers ({workers}) must be at least 1")
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise ValueError(f"cpus_per_worker ({cpus_per_worker}) must be > 0 and gpus_per_worker "
                         f"({gpus_per_worker}) >= 0")
    if address is None:
        # A Ray of this machine alone listens on 127.0.0.1 only: Ray's switch for a one-machine
        # Ray (Windows and macOS have it on by default), which Ray reads when it is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = _import_ray()
    from ray import train as ray_train  # pylint: disable=import-outside-toplevel
    # Ray's own lines below errors stay hidden (its INFO lines, and warnings that need no action,
    # e.g. that a one-machine Ray runs without its dashboard); the workers' lines all show.
    options = {"logging_config": ray.LoggingConfig(encoding="TEXT", log_level="ERROR")}
    for name, value in _WORKER_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if address is None:
        # Its processes inherit this environment: PYTHONPATH finds the project as here.
        ray.init(num_cpus=max(1, int(workers * cpus_per_worker)), **options)
    else:
        env_vars = {name: os.environ[name] for name in _WORKER_ENVIRONMENT}
        ray.init(address=address, runtime_env={"env_vars": env_vars}, **options)
    try:
        trainer = ray_train.tensorflow.TensorflowTrainer(
            _train_worker, train_loop_config={"argv": ["trainer.main", *flags]},
            scaling_config=ray_train.ScalingConfig(
                num_workers=workers, use_gpu=gpus_per_worker > 0,
                resources_per_worker={"CPU": cpus_per_worker, "GPU": gpus_per_worker}),
            run_config=ray_train.RunConfig(
                storage_path=storage_path,
                failure_config=ray_train.FailureConfig(max_failures=max_failures)))
        try:
            result = trainer.fit()
        except ray_train.TrainingFailedError as error:
            raise RuntimeError(_first_failure(error)) from None
        with result.checkpoint.as_directory() as directory:
            with open(os.path.join(directory, _RESULTS_FILE)) as f:
                return json.load(f)
    finally:
        ray.shutdown()


def _train_worker(config: dict) -> None:
    """The training function of every Ray worker: the command line's run. The chief's results
    go back to the driver as a Ray checkpoint of one file (Ray keeps only the metrics that come
    with a checkpoint); the run's own checkpoints stay in --model_dir."""
    # Ray's TensorFlow set-up asks for Keras 2 (tf_keras); this project is Keras 3.
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    from ray import train as ray_train  # pylint: disable=import-outside-toplevel
    from trainer import main as trainer_main  # pylint: disable=import-outside-toplevel
    results = trainer_main.run(config["argv"])
    logging.disable(logging.INFO)  # Ray Train logs INFO lines of its own as it reports.
    try:
        if ray_train.get_context().get_world_rank() != 0:
            ray_train.report({})
            return
        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, _RESULTS_FILE), "w") as f:
                json.dump(results, f)
            ray_train.report({}, checkpoint=ray_train.Checkpoint.from_directory(directory))
    finally:
        logging.disable(logging.NOTSET)


def _first_failure(error: Exception) -> str:
    """One line for a failed Ray Train run: the lowest-ranked worker's error, once."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        return f"the Ray Train run failed: {str(error).strip().splitlines()[-1]}"
    rank = min(failures)
    cause = failures[rank]
    cause = getattr(cause, "cause", None) or cause  # A RayTaskError wraps the worker's exception.
    message = str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__
    others = [other for other in failures if other != rank]
    also = f" (and worker(s) {', '.join(map(str, others))})" if others else ""
    return f"Ray worker {rank}{also} failed: {type(cause).__name__}: {message}"
