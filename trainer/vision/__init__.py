"""The image classification task: the tutorial's half of the project, built on the framework.

- `classifier.py`: `ImageClassifier`, a `Module` around either CNN (loss, accuracy, Adam).
- `loggers.py`: `SamplePredictions` and `ConfusionMatrix`, the pictures of a run in TensorBoard.
- `export.py`: the trained classifier as a SavedModel that serves raw uint8 images.
- `plots.py`: PNG curves, confusion matrix and learning-rate finder, for readers without
  TensorBoard.
- `predictions.py`: `predictions.csv`, the classifier's prediction for every example of a split.
"""

from trainer.vision.classifier import ImageClassifier
from trainer.vision.loggers import ConfusionMatrix, SamplePredictions

__all__ = ["ConfusionMatrix", "ImageClassifier", "SamplePredictions"]
