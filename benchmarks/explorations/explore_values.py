"""Which DKVB variants close the accuracy gap to the order-independent peers?

The exploration behind the "Accuracy" page of the docs (issue 9). For one
dataset of (cached) embeddings and one key source it fits a codebook per
shape, computes each sample's ``top_k`` nearest keys once, and then scores
value variants that all keep updates local to the keys a sample fetched:

* ``count``: one-pass counting values (``value_update="count"``), smoothing a;
* ``count-top{k}``: a sample adds its counts to its k nearest keys per codebook
  and prediction averages the values of the k keys (uniform, or weighted by a
  softmax of negative squared distances, ``-dw``);
* ``count-mi``: codebooks weighted by the mutual information between key and
  class estimated from the counts (a weighted naive Bayes);
* ``sgd``: the paper's SGD values (learning_rate="auto", class-incremental
  and i.i.d.), for reference.

Counts and values are the library's (``skkvb.engine.values``: ``add_counts``,
``count_values``, and ``decode_counts`` for ``count``, which is what
``KeyValueBottleneckClassifier(value_update="count", count_smoothing=a,
mask_unused_keys=False)`` computes); the variants only change which keys a
sample counts in and how the fetched values are averaged.

Inputs are normalised five ways before the keys are fitted (``--norms``):
``task`` (StandardScaler fitted on the task's training inputs, what
``skkvb-bench --scaling standard`` does), ``key`` (fitted on the key data),
``own`` (key data and task data each standardised with their own
statistics), ``l2`` (each row scaled to unit norm; no statistics), ``none``.
A scaling ending in ``+heads`` also scales every head to unit norm.

    python benchmarks/explorations/explore_values.py --dataset fashion-mnist --key-data mnist \
        --shapes 64x512x8,256x1024x8 --norms task,key,l2,none

Embeddings come from skkvb-bench's cache (run skkvb-bench on the dataset first
or let this script compute them, which is slow on a CPU). Prints one line per
variant: test accuracy (and log loss where meaningful).
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.codes import flat_codes, prepare_keys
from skkvb.engine.heads import make_projection, project
from skkvb.engine.values import add_counts, count_values, decode_counts, mean_over_codebooks
from skkvb.streams import ClassIncrementalSplit

# benchmarks/_common.py is one folder up: put that folder on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import (  # noqa: E402
    comma_list,
    embedding_cache,
    load_embeddings,
    make_parser,
    normalise,
    parse_shape,
)


def shape_name(shape):
    return "x".join(str(v) for v in shape)


def unit_heads(Zs, n_codebooks, key_dim, seed):
    """Project with a fixed Gaussian matrix and scale each head to unit norm;
    returned flat, for a ``projection="partition"`` codebook (identity heads)."""
    matrix = make_projection("gaussian", Zs[0].shape[1], n_codebooks, key_dim,
                             np.random.RandomState(seed))
    out = []
    for Z in Zs:
        heads = (Z @ matrix).reshape(len(Z), n_codebooks, key_dim)
        heads /= np.linalg.norm(heads, axis=2, keepdims=True) + 1e-12
        out.append(heads.reshape(len(Z), -1).astype(np.float32))
    return out


def top_keys(codebook, Z, top_k, block=512):
    """Indices (N, C, k) and squared distances (N, C, k) of the k nearest keys."""
    keys = torch.as_tensor(codebook.keys_)
    projection = torch.as_tensor(codebook.projection_)
    prepared = prepare_keys(keys, scale=1.0)  # the engine's search operands, unscaled
    keys_t, key_sq_norms = prepared.keys_t, prepared.sq_norms
    n_codebooks = keys.shape[0]
    indices, distances = [], []
    for start in range(0, len(Z), block):
        heads = project(torch.as_tensor(Z[start : start + block]), projection, n_codebooks)
        heads = heads.transpose(0, 1)  # (C, n, d)
        d2 = torch.baddbmm(key_sq_norms, heads, keys_t, alpha=-2.0)
        d2 += heads.pow(2).sum(-1, keepdim=True)  # true squared distances, for weighting
        values, index = torch.topk(d2, top_k, dim=2, largest=False)
        indices.append(index.transpose(0, 1))
        distances.append(values.clamp_min(0).transpose(0, 1))
    return torch.cat(indices), torch.cat(distances)


def table_rows(index, n_keys):
    """Rows of a (C * K, n_classes) table of the keys in ``index`` (N, C, k)."""
    n, c, k = index.shape
    rows = flat_codes(index.transpose(1, 2).reshape(n * k, c), n_keys)  # (N * k, C)
    return rows.view(n, k, c).transpose(1, 2)


def count_table(rows, weights, y, n_codebooks, n_keys, n_classes):
    """Per (codebook, key) class counts, (C * K, n_classes) float64, by the library's
    ``add_counts``. ``rows`` (N, C, k) are the keys each sample counts in, with
    ``weights`` (N, C, k); ``None`` counts each sample once in its nearest key per
    codebook, as ``value_update="count"`` does."""
    n, c, k = rows.shape
    table = torch.zeros(n_codebooks * n_keys, n_classes, dtype=torch.float64)
    labels = torch.as_tensor(y, dtype=torch.int64)
    if weights is None:
        add_counts(table, rows[..., 0], labels)
    else:  # each (sample, codebook, key) entry counted with its own weight
        entries = rows.reshape(-1, 1)
        add_counts(table, entries, labels.repeat_interleave(c * k), weights.reshape(-1))
    return table


def soft_weights(distances, k, temperature):
    if temperature is None:
        return torch.full_like(distances[..., :k], 1.0 / k)
    scaled = -distances[..., :k] / (temperature * distances[..., :1].mean())
    return torch.softmax(scaled, dim=-1)


def count_logits(table, rows, weights, smoothing, codebook_weights=None):
    """Logits (N, n_classes) of the library's counting values fetched at ``rows``
    (N, C, k): ``decode_counts`` for the nearest key alone (``weights`` None),
    else the ``weights``-weighted sum over the k keys of ``count_values``."""
    if weights is None and codebook_weights is None:
        return decode_counts(table, rows[..., 0], smoothing)
    n, c, k = rows.shape
    fetched = count_values(table.index_select(0, rows.reshape(-1)), smoothing).view(n, c, k, -1)
    if weights is None:
        per_codebook = fetched[:, :, 0]
    else:
        per_codebook = (fetched * weights.unsqueeze(-1).double()).sum(2)  # (n, c, classes)
    if codebook_weights is not None:
        per_codebook = per_codebook * codebook_weights.view(1, c, 1)
    return mean_over_codebooks(per_codebook)


def mutual_information(table, n_codebooks):
    """I(key; class) of each codebook from its count table."""
    counts = table.view(n_codebooks, -1, table.shape[1])
    total = counts.sum((1, 2), keepdim=True)
    joint = counts / total
    p_key = joint.sum(2, keepdim=True)
    p_class = joint.sum(1, keepdim=True)
    ratio = torch.where(joint > 0, joint / (p_key * p_class), torch.ones_like(joint))
    return (joint * torch.log(ratio)).sum((1, 2))


def scores(logits, y_test):
    logits = logits - logits.max(1, keepdim=True).values
    log_proba = logits - torch.logsumexp(logits, 1, keepdim=True)
    y = torch.as_tensor(y_test)
    accuracy = float((log_proba.argmax(1) == y).double().mean())
    log_loss = float(-log_proba[torch.arange(len(y)), y].mean())
    return accuracy, log_loss


def sgd_runs(codebook, Z_train, y_train, Z_test, y_test, seed, epochs):
    results = {}
    for setting in ("iid", "class-incremental"):
        model = KeyValueBottleneckClassifier(
            codebook=FrozenEstimator(codebook), partial_fit_max_iter=epochs, random_state=seed,
            value_update="sgd",
        )
        if setting == "iid":
            order = np.random.RandomState(seed).permutation(len(y_train))
            for part in np.array_split(order, 5):
                model.partial_fit(Z_train[part], y_train[part], classes=np.unique(y_train))
        else:
            split = ClassIncrementalSplit(n_phases=5, random_state=seed)
            for part in split.split(Z_train, y_train):
                model.partial_fit(Z_train[part], y_train[part])
        results[setting] = float(model.score(Z_test, y_test))
    return results


def explore(args):
    torch.set_num_threads(args.threads)
    memory = embedding_cache()
    Z_train, y_train, Z_test, y_test = load_embeddings(args.dataset, args.encoder, memory)
    if args.key_data == "train":
        Z_key = Z_train
    else:
        Z_key = load_embeddings(args.key_data, args.encoder, memory)[0]
    n_classes = len(np.unique(y_train))
    rows = []

    def report(**row):
        row = {"dataset": args.dataset, "key_data": args.key_data, **row}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for norm in args.norms:
        unit = norm.endswith("+heads")
        K0, Tr0, Te0 = normalise(norm.removesuffix("+heads"), Z_key, Z_train, Z_test)
        for shape in args.shapes:
            C, K, d = shape
            K_, Tr, Te = unit_heads((K0, Tr0, Te0), C, d, args.seed) if unit else (K0, Tr0, Te0)
            start = time.perf_counter()
            codebook = KeyCodebook(
                n_codebooks=C, n_keys=K, key_dim=d, max_iter=args.key_epochs,
                projection="partition" if unit else "gaussian", random_state=args.seed,
            ).fit(K_[: args.max_key_samples])
            fit_s = time.perf_counter() - start
            top = max(args.top_k)
            index_tr, dist_tr = top_keys(codebook, Tr, top)
            index_te, dist_te = top_keys(codebook, Te, top)
            rows_tr, rows_te = table_rows(index_tr, K), table_rows(index_te, K)
            common = dict(norm=norm, shape=shape_name(shape), key_fit_s=round(fit_s, 1))
            for k in args.top_k:
                for temperature in [None] + ([] if k == 1 else args.temperatures):
                    # The nearest key alone, unweighted: the library's counting as it is.
                    w_tr = None if k == 1 else soft_weights(dist_tr, k, temperature)
                    w_te = None if k == 1 else soft_weights(dist_te, k, temperature)
                    table = count_table(rows_tr[..., :k], w_tr, y_train, C, K, n_classes)
                    name = "count" if k == 1 else f"count-top{k}" + (
                        "" if temperature is None else f"-dw{temperature:g}"
                    )
                    for a in args.smoothing:
                        acc, loss = scores(count_logits(table, rows_te[..., :k], w_te, a), y_test)
                        report(**common, variant=name, smoothing=a, accuracy=acc, log_loss=loss)
                    if k == 1:
                        weights = mutual_information(table, C)
                        weights = weights / weights.mean()
                        for a in args.smoothing:
                            acc, loss = scores(
                                count_logits(table, rows_te[..., :1], None, a, weights), y_test
                            )
                            report(**common, variant="count-mi", smoothing=a, accuracy=acc,
                                   log_loss=loss)
            if args.sgd_epochs:
                result = sgd_runs(codebook, Tr, y_train, Te, y_test, args.seed, args.sgd_epochs)
                report(**common, variant=f"sgd-{args.sgd_epochs}ep", **result)
    return rows


def summarise(paths):
    """Mean accuracy over seeds of every variant in JSON-lines result files:
    one line per (dataset, key data, scaling, shape), one column per variant."""
    groups, variants = {}, []
    for path in paths:
        with open(path) as f:
            for line in f:
                row = json.loads(line)
                if "smoothing" in row:
                    cells = {f"{row['variant']} a={row['smoothing']:g}": row["accuracy"]}
                else:
                    cells = {f"{row['variant']} {k}": row[k] for k in ("iid", "class-incremental")}
                key = (row["dataset"], row["key_data"], row["norm"], row["shape"])
                for name, accuracy in cells.items():
                    groups.setdefault(key, {}).setdefault(name, []).append(accuracy)
                    if name not in variants:
                        variants.append(name)
    print("dataset | keys from | scaling | CxKxd_k | " + " | ".join(variants))
    for key, cells in sorted(groups.items()):
        means = [
            f"{np.mean(cells[v]):.3f} ({len(cells[v])})" if v in cells else "-" for v in variants
        ]
        print(" | ".join(key) + " | " + " | ".join(means))


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--summarise", nargs="+", metavar="JSONL",
                        help="print the mean table of result files and exit")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--encoder", default="efficientnet-lite0")
    parser.add_argument("--key-data", default="train", help="'train' or another dataset name")
    parser.add_argument("--shapes", type=comma_list(parse_shape), default=[(64, 512, 8)])
    parser.add_argument("--norms", type=comma_list(str), default=["task"])
    parser.add_argument("--top-k", type=comma_list(int), default=[1, 2, 4, 8])
    parser.add_argument("--temperatures", type=comma_list(float), default=[1.0])
    parser.add_argument("--smoothing", type=comma_list(float), default=[0.1, 1.0])
    parser.add_argument("--key-epochs", type=int, default=10)
    parser.add_argument("--max-key-samples", type=int, default=None)
    parser.add_argument("--sgd-epochs", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    if args.summarise:
        return summarise(args.summarise)
    rows = explore(args)
    if args.out:
        with open(args.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
