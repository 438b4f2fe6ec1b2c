"""`predictions.csv`: the classifier's prediction for every example of a split, in split order.

    index,label,label_name,predicted,predicted_name,probability
    0,3,cat,3,cat,0.612347
    1,8,ship,1,automobile,0.493871

`index` is the example's position in the split, `label` its true class (empty when the dataset
does not know it, i.e. a negative label), `predicted` the most probable class and `probability`
the probability the classifier gives it. A DataModule whose examples are files (an image folder:
`example_paths(stage)`) adds a `path` column after `index`.

One row per example, exactly once, on one device, N replicas or M workers: the predict batches of
`ImageClassificationData` are slices of global batches, so `strategy.gather` returns the
predictions in split order on any cluster (data/image_classification.py). Every worker predicts
(each gather is a collective); only the chief writes.
"""

import csv

import numpy as np

from trainer import distribute

COLUMNS = ("index", "label", "label_name", "predicted", "predicted_name", "probability")


def write_predictions(trainer, module, datamodule, path: str) -> int:
    """Predicts `datamodule.predict_dataset` with `module` and writes the rows to `path` (chief).

    Every worker must call it. Returns the number of examples predicted.

    Raises:
        RuntimeError: if the labels gathered with the predictions do not pair up with them.
    """
    probabilities = trainer.predict(module, datamodule)
    # The labels travel the same distributed path as the predictions, so they pair up row by row.
    labels = distribute.gathered_labels(trainer.strategy, datamodule.predict_dataset)
    if len(labels) != len(probabilities):
        raise RuntimeError(f"{len(probabilities)} predictions but {len(labels)} labels were "
                           "gathered from the predict split")
    example_paths = getattr(datamodule, "example_paths", None)
    paths = example_paths("predict") if example_paths else None
    if trainer.is_chief:
        _write_csv(path, labels, probabilities, datamodule.class_names, paths)
    return len(probabilities)


def _write_csv(path, labels, probabilities, class_names, paths=None):
    predicted = np.argmax(probabilities, axis=-1)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS if paths is None else (COLUMNS[0], "path", *COLUMNS[1:]))
        for index, (label, guess, row) in enumerate(zip(labels, predicted, probabilities)):
            known = label >= 0
            where = [] if paths is None else [paths[index]]
            writer.writerow([index, *where, label if known else "",
                             class_names[label] if known else "", guess, class_names[guess],
                             f"{row[guess]:.6f}"])
