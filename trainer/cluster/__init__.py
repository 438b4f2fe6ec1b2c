"""How the processes of a multi-worker run are started; the training itself is the same in all.

Every worker runs `python -m trainer.main` (or `trainer.main.run(argv)`) with the same flags, and
`MultiWorkerMirroredStrategy` learns the cluster from `TF_CONFIG` (or from a SLURM job step).
What differs is who starts the workers and writes `TF_CONFIG`:

- `launcher.py`: N workers as processes of this host, `python -m trainer.launch --workers=N`.
- `ray_train.py`: N workers as actors of a Ray cluster, through Ray Train's `TensorflowTrainer`
  (`python -m trainer.ray --workers=N`; an optional extra: `pip install ".[ray]"`).
- `slurm.py`: the tasks of a SLURM job step (`srun`), read without `TF_CONFIG`, and requeueing.

A Kubeflow `TFJob` on Kubernetes writes `TF_CONFIG` itself: see deploy/ and docs/multi_worker.md.
"""
