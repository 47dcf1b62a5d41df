"""The order-independent peers under each feature scaling (Accuracy page).

Streaming LDA, nearest class mean and the RanPAC-style ridge, fitted once on
EfficientNet-Lite0 embeddings (they are order-independent: this is also their
class-incremental accuracy), with the scalings of ``explore_values.py``.
Prints one JSON line per (dataset, scaling, method).

    python benchmarks/explore_peers.py
"""

import json
import sys
from pathlib import Path

import joblib
import torch

from skkvb.bench._cli import _default_cache_dir
from skkvb.bench._peers import NearestClassMean, RandomReLURidgeClassifier, StreamingLDA

sys.path.insert(0, str(Path(__file__).parent))
from explore_values import load_embeddings, normalise  # noqa: E402

PAIRS = [("fashion-mnist", "mnist"), ("mnist", "fashion-mnist")]  # (task, key data)


def main():
    torch.set_num_threads(1)
    memory = joblib.Memory(_default_cache_dir(), verbose=0)
    for dataset, key_data in PAIRS:
        Z_train, y_train, Z_test, y_test = load_embeddings(dataset, "efficientnet-lite0", memory)
        Z_key = load_embeddings(key_data, "efficientnet-lite0", memory)[0]
        for norm in ["task", "key", "l2", "none"]:
            _, train, test = normalise(norm, Z_key, Z_train, Z_test)
            for name, model in [
                ("slda", StreamingLDA()),
                ("ncm", NearestClassMean()),
                ("ranpac", RandomReLURidgeClassifier(random_state=0)),
            ]:
                accuracy = model.fit(train, y_train).score(test, y_test)
                row = dict(dataset=dataset, keys=key_data, norm=norm, method=name,
                           accuracy=accuracy)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
