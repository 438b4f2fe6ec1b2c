"""absl flag definitions, one module per concern. Only `trainer/main.py` reads their values.

    flags.model          --model, --learning_rate, --sync_batchnorm, --dropout,
                         --width_multiplier, --weight_decay, --label_smoothing
    flags.dataset        --dataset, --data_dir, --download, --batch_size, splits, --augment,
                         --predict_split, --data_order, --image_size, --predict_files
    flags.training       --epochs, --seed, --model_dir, --steps_per_loop, --precision,
                         --jit_compile, --run_eagerly, --detect_anomaly, --profile_steps,
                         checkpoints
    flags.distribution   --strategy, --communication, --cpu_devices, --gpus, --gpu_memory_growth,
                         --slurm_port_base, --slurm_requeue, --evaluate_checkpoints,
                         --evaluator_timeout_s
    flags.diagnostics    --explain, --selftest, --selftest_perturb_replica
    flags.run_control    --max_steps, --max_time, --limit_*_batches, --val_check_interval,
                         --fast_dev_run, --overfit_batches, early stopping
    flags.optimization   --gradient_clip_val, --accumulate_grad_batches, --lr_schedule,
                         --warmup_steps, --ema_decay, --lr_find
    flags.output         --progress_bar, --log_every_n_steps, --tensorboard, --csv_log,
                         --mlflow_tracking_uri, --mlflow_experiment, --mlflow_run_name

`flags.checks` holds what absl's bounds cannot check (nan and inf in float flags); `parse` sets
them all from a command line.
"""

from absl import flags as absl_flags

from flags import (dataset, diagnostics, distribution, model, optimization, output, run_control,
                   training)

__all__ = ["dataset", "diagnostics", "distribution", "model", "optimization", "output", "parse",
           "run_control", "training"]


def parse(argv: list[str]) -> None:
    """Sets every flag from a command line (the program's name, then flags), starting from the
    defaults, as `python -m trainer.main` does. The launchers check their workers' flags with it
    once, before any worker starts; `trainer.main.run` parses with it.

    Raises:
        ValueError: for an unknown or refused flag (absl's message names it), or an argument
            that is not a flag.
    """
    if absl_flags.FLAGS.is_parsed():  # A second parse must not inherit the first one's values.
        absl_flags.FLAGS.unparse_flags()
    try:
        remaining = absl_flags.FLAGS(argv)
    except absl_flags.Error as error:
        raise ValueError(str(error)) from None
    if len(remaining) > 1:
        raise ValueError(f"unexpected positional arguments: {' '.join(remaining[1:])}")
