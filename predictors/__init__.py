"""Learned latency predictors, one per target device (issue 3).

    import nas, predictors
    p = predictors.load("pixel4")                 # a shipped profile, a device fitted here, or a file
    p.predict(nas.reference("mobilebert").arch)   # milliseconds, deterministic
    predictors.profile_names()                    # ["pixel3", "pixel4"]

Measure (``predictors.harness``), microbenchmark (``predictors.microbench``), fit
(``predictors.fit``), calibrate phones (``predictors.phones``), read phone tool outputs
(``predictors.ingest``), export benchmark bundles (``predictors.bundle``); the CLI is
``nas latency ...`` (``predictors.cli``).
"""

from predictors.features import FEATURES, genome_features
from predictors.predictor import Predictor, load, profile_names

__all__ = ["FEATURES", "Predictor", "genome_features", "load", "profile_names"]
