"""The engine: tensors and configs in, tensors and numbers out; it never sees the registry.

data (datasets as device tensors), recipes (resolved training configs), devices, evaluation (loss,
accuracy, BatchNorm re-estimation), loop (the one epoch loop), training (anchors), starlight (the
Starlight algorithm, paper Algorithm 1), interpolation (weights on a segment), barriers (paper Eq. 1),
calibration (NLL, ECE, AUROC).
"""
