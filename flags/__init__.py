"""absl flag definitions, one module per concern. Only `trainer/main.py` reads their values.

    flags.model          --model, --learning_rate, --sync_batchnorm, --dropout,
                         --width_multiplier, --weight_decay, --label_smoothing
    flags.dataset        --dataset, --data_dir, --download, --batch_size, splits, --augment
    flags.training       --epochs, --seed, --model_dir, --steps_per_loop, --precision,
                         --jit_compile, --run_eagerly
    flags.distribution   --strategy, --communication, --cpu_devices, --gpus, --gpu_memory_growth
    flags.diagnostics    --explain, --selftest, --selftest_perturb_replica
"""

from flags import dataset, diagnostics, distribution, model, training

__all__ = ["dataset", "diagnostics", "distribution", "model", "training"]
