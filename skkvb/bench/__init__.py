"""skkvb-bench: the class-incremental benchmark of DKVB against streaming peers.

Run it as ``skkvb-bench`` or ``python -m skkvb.bench`` (``--help`` lists the
options). The peers -- streaming LDA, nearest class mean, a RanPAC-style
random-feature ridge classifier, and the forgetting baselines (SGD linear
probe, MLP) -- are scikit-learn estimators with ``partial_fit`` and a growing
label set. They are the benchmark's comparison points, kept apart from the
library's own estimators in :mod:`skkvb`.
"""

from ._cli import build_parser, main, run_benchmark
from ._encoders import register_encoder
from ._peers import (
    MLPProbe,
    NearestClassMean,
    RandomReLURidgeClassifier,
    SGDLinearProbe,
    StreamingLDA,
)

__all__ = [
    "MLPProbe",
    "NearestClassMean",
    "RandomReLURidgeClassifier",
    "SGDLinearProbe",
    "StreamingLDA",
    "build_parser",
    "main",
    "register_encoder",
    "run_benchmark",
]
