"""Streaming regression: KeyValueBottleneckRegressor against its peers, i.i.d. and sorted by target.

Each model is trained two ways and scored (R^2, MAE) on the full test set:

* ``iid``: on all the training data (``fit``, or ``partial_fit`` over shuffled
  batches for SGDRegressor);
* ``sorted``: as a stream of ``--phases`` ``partial_fit`` calls sorted by
  target, lowest targets first -- the regression analogue of a
  class-incremental stream. A model that forgets ends fitting the last phase.

Models: the bottleneck with keys fitted on the training inputs without targets
(``kvb``; ``FrozenEstimator``), and with no codebook given, its keys fitted on
the first phase and unused keys re-seeded on later ones (``kvb cold``, its
defaults otherwise); KNeighborsRegressor; Ridge on random ReLU features
(a Gaussian random projection to ``--n-random-features`` dimensions, ReLU,
ridge, its penalty picked from 10**-3..10**6 on a fifth of the training set held
out, i.i.d.; it streams by adding up H'H and H'y, which is order-independent); and
SGDRegressor (``--epochs`` passes over each phase). KNN has no ``partial_fit``
and is trained i.i.d. only. Every model gets the same inputs, scaled by
``--scaling``: ``standard`` (the training set's statistics; the default for
diabetes), ``l2`` (rows to unit norm; the default for embeddings), ``none``,
or ``/16`` (digits pixels, as skkvb-bench does; their default). Standardising
near-constant pixels or embedding dimensions gives the linear models test
inputs of enormous magnitude.

Datasets: ``diabetes`` (sklearn's, 70/30 split), ``digits`` (sklearn's pixels,
the digit 0-9 as a number), ``mnist`` (the digit as a number from
``--encoder`` embeddings, e.g. efficientnet-lite0 with --max-train 4000
--max-test 2000, from skkvb-bench's embedding cache). Run::

    python benchmarks/regression.py --dataset diabetes
    python benchmarks/regression.py --dataset digits
    python benchmarks/regression.py --dataset mnist --encoder efficientnet-lite0 \\
        --max-train 4000 --max-test 2000

The table is printed and written to ``benchmarks/results/regression_<dataset>.txt``.
"""

import time
from pathlib import Path

import numpy as np
from _common import Table, embedded_data, load_average, make_parser, parse_shape
from sklearn.datasets import load_diabetes
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import SGDRegressor
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.preprocessing import StandardScaler, normalize

from skkvb import KeyCodebook, KeyValueBottleneckRegressor

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SHAPES = {"diabetes": (64, 32, 4), "digits": (64, 256, 8), "mnist": (64, 1024, 16)}


def parse_args():
    parser = make_parser(__doc__)
    parser.add_argument("--dataset", default="diabetes", choices=sorted(DEFAULT_SHAPES))
    parser.add_argument("--encoder", default="raw")
    parser.add_argument("--max-train", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--phases", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="SGDRegressor passes per phase")
    parser.add_argument("--n-random-features", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scaling", choices=["standard", "l2", "none", "/16"], default=None,
                        help="input scaling (default: per dataset, see above)")
    parser.add_argument("--shape", type=parse_shape, default=None,
                        help="codebooks x keys x key dimension (default: per dataset)")
    return parser.parse_args()


def load(args):
    """(X_train, y_train, X_test, y_test, description), y as float."""
    if args.dataset == "diabetes":
        X, y = load_diabetes(return_X_y=True)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
        return X_train, y_train, X_test, y_test, "diabetes"
    Z_train, y_train, Z_test, y_test = embedded_data(args)
    description = f"{args.dataset} through {args.encoder}, the digit as a number"
    return Z_train, y_train.astype(float), Z_test, y_test.astype(float), description


def scaled(args, X_train, X_test):
    if args.scaling is None:
        raw_digits = args.dataset == "digits" and args.encoder == "raw"
        args.scaling = {"diabetes": "standard"}.get(args.dataset, "/16" if raw_digits else "l2")
    if args.scaling == "/16":
        return X_train / 16.0, X_test / 16.0
    if args.scaling == "l2":
        return normalize(X_train), normalize(X_test)
    if args.scaling == "standard":
        scaler = StandardScaler().fit(X_train)
        return scaler.transform(X_train), scaler.transform(X_test)
    return X_train, X_test


class RandomReLURidge:
    """Ridge on fixed random ReLU features, streamed by its sufficient statistics."""

    def __init__(self, n_features, alpha=1.0, random_state=0):
        self.n_features, self.alpha, self.random_state = n_features, alpha, random_state

    def _features(self, X):
        return np.maximum(X @ self.projection_, 0.0)

    def partial_fit(self, X, y):
        if not hasattr(self, "projection_"):
            rng = np.random.RandomState(self.random_state)
            self.projection_ = rng.normal(size=(X.shape[1], self.n_features)) / np.sqrt(X.shape[1])
            self.gram_ = np.zeros((self.n_features + 1, self.n_features + 1))
            self.moments_ = np.zeros(self.n_features + 1)
        H = np.c_[self._features(X), np.ones(len(X))]  # last column: the intercept
        self.gram_ += H.T @ H
        self.moments_ += H.T @ y
        return self

    def fit(self, X, y):
        return self.partial_fit(X, y)

    def predict(self, X):
        penalty = self.alpha * np.eye(len(self.gram_))
        penalty[-1, -1] = 0.0  # the intercept is not penalised
        weights = np.linalg.solve(self.gram_ + penalty, self.moments_)
        return np.c_[self._features(X), np.ones(len(X))] @ weights


def ridge_alpha(n_features, X, y):
    """The penalty of RandomReLURidge with the best R^2 on a held-out fifth of X."""
    X_fit, X_val, y_fit, y_val = train_test_split(X, y, test_size=0.2, random_state=0)
    model = RandomReLURidge(n_features).fit(X_fit, y_fit)
    alphas = 10.0 ** np.arange(-3, 7)
    fits = []
    for model.alpha in alphas:
        fits.append(r2_score(y_val, model.predict(X_val)))
    return alphas[int(np.argmax(fits))]


def models(args, X_train, y_train):
    """name -> (factory, streams); each factory makes a fresh model."""
    n_codebooks, n_keys, key_dim = args.shape or DEFAULT_SHAPES[args.dataset]
    alpha = ridge_alpha(args.n_random_features, X_train, y_train)

    def codebook():
        return KeyCodebook(n_codebooks=n_codebooks, n_keys=n_keys, key_dim=key_dim,
                           random_state=args.seed, device="cpu")

    keys = FrozenEstimator(codebook().fit(X_train))  # without targets
    return {
        "kvb": (lambda: KeyValueBottleneckRegressor(keys, device="cpu"), True),
        "kvb uniform": (
            lambda: KeyValueBottleneckRegressor(keys, pooling="uniform", device="cpu"), True
        ),
        "kvb cold": (lambda: KeyValueBottleneckRegressor(
            codebook(), device="cpu", random_state=args.seed), True),
        "knn (k=5)": (lambda: KNeighborsRegressor(5), False),
        "knn (k=10)": (lambda: KNeighborsRegressor(10), False),
        f"random-ReLU ridge a={alpha:g}": (
            lambda: RandomReLURidge(args.n_random_features, alpha), True
        ),
        "SGDRegressor": (lambda: SGDRegressor(random_state=args.seed), True),
    }


def stream(model, phases, epochs):
    for X, y in phases:
        for _ in range(epochs):
            model.partial_fit(X, y)
    return model


def main():
    args = parse_args()
    X_train, y_train, X_test, y_test, description = load(args)
    X_train, X_test = scaled(args, X_train, X_test)
    rng = np.random.RandomState(args.seed)
    iid = [(X_train[i], y_train[i])
           for i in np.array_split(rng.permutation(len(y_train)), args.phases)]
    by_target = np.argsort(y_train, kind="stable")
    ordered = [(X_train[i], y_train[i]) for i in np.array_split(by_target, args.phases)]
    shape = "x".join(map(str, args.shape or DEFAULT_SHAPES[args.dataset]))
    lines = [
        f"{description}: {len(X_train)} train, {len(X_test)} test, {X_train.shape[1]} features; "
        f"inputs scaled {args.scaling}; kvb codebook {shape}; {args.phases} phases sorted by "
        f"target; seed {args.seed}",
        f"test-set R^2 and MAE; load average {load_average()}",
    ]
    table = Table([("model", 27, ""), ("iid R2", 9, ".3f"), ("iid MAE", 9, ".3f"),
                   ("sorted R2", 11, ".3f"), ("sorted MAE", 11, ".3f"), ("s", 7, ".1f")],
                  missing="-")
    lines.append(table.header())
    print("\n".join(lines), flush=True)
    for name, (make, streams) in models(args, X_train, y_train).items():
        tic = time.perf_counter()
        epochs = args.epochs if name == "SGDRegressor" else 1
        if name == "SGDRegressor":
            model = stream(make(), iid, epochs)  # the same calls, shuffled batches
        else:
            model = make().fit(X_train, y_train)
        cells = scores(model, X_test, y_test)
        if streams:
            cells += scores(stream(make(), ordered, epochs), X_test, y_test)
        else:
            cells += (None, None)
        lines.append(table.row(name, *cells, time.perf_counter() - tic))
        print(lines[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"regression_{args.dataset}.txt").write_text("\n".join(lines) + "\n")


def scores(model, X, y):
    predictions = model.predict(X)
    return r2_score(y, predictions), mean_absolute_error(y, predictions)


if __name__ == "__main__":
    main()
