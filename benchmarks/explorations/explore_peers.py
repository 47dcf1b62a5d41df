"""The order-independent peers under each feature scaling (Accuracy page).

Streaming LDA, nearest class mean and the RanPAC-style ridge, fitted once on
EfficientNet-Lite0 embeddings (they are order-independent: this is also their
class-incremental accuracy), with the scalings of ``explore_values.py``
(``_common.normalise``). Prints one JSON line per (dataset, scaling, method).

    python benchmarks/explorations/explore_peers.py
"""

import json
import sys
from pathlib import Path

import torch

from skkvb.bench._peers import NearestClassMean, RandomReLURidgeClassifier, StreamingLDA

# benchmarks/_common.py is one folder up: put that folder on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import embedding_cache, load_embeddings, make_parser, normalise  # noqa: E402

PAIRS = [("fashion-mnist", "mnist"), ("mnist", "fashion-mnist")]  # (task, key data)


def main(argv=None):
    make_parser(__doc__).parse_args(argv)  # --help; no options
    torch.set_num_threads(1)
    memory = embedding_cache()
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
