"""Epochs to accuracy: learning_rate="auto" against the paper's SGD settings.

The paper trains values with SGD at learning rate 0.3 for 2,000 epochs per
phase. Our default, ``learning_rate="auto"`` (``1.0 * n_codebooks``), should
reach the same final class-incremental accuracy (within 1 point) in at most
1/20 of the epochs. This script runs both on the same keys and the same
class-incremental stream (5 phases, classes in a seeded order, each phase one
``partial_fit`` call with ``partial_fit_max_iter`` epochs) and prints, per run,
the epochs per phase, the final test accuracy and the wall time.

    python benchmarks/time_to_accuracy.py --dataset digits
    python benchmarks/time_to_accuracy.py --dataset fashion-mnist --encoder efficientnet-lite0

Fashion-MNIST embeddings are read from skkvb-bench's cache (computed and
cached when missing, which is slow on a CPU). Everything else (batch 256, label
smoothing 0.1, keys fitted on the training inputs, no feature scaling) is the
same for every run; only the learning rate and the epochs per phase differ.
"""

import torch
from sklearn.frozen import FrozenEstimator

from skkvb import KeyCodebook, KeyValueBottleneckClassifier
from skkvb.engine.values import auto_learning_rate
from skkvb.streams import ClassIncrementalSplit

from _common import (  # benchmarks/_common.py, next to this script
    Table,
    comma_list,
    load_embeddings,
    make_parser,
    parse_shape,
    timed,
)

DEFAULT_SHAPES = {"digits": (64, 128, 8), "fashion-mnist": (64, 512, 8)}
TABLE = Table(
    [("run", 22, ""), ("lr", 8, "g"), ("epochs/phase", 14, "d")]
    + [("accuracy", 10, ".4f"), ("seconds", 10, ".1f")]
)


def train_stream(model, Z_train, y_train, seed):
    for part in ClassIncrementalSplit(n_phases=5, random_state=seed).split(Z_train, y_train):
        model.partial_fit(Z_train[part], y_train[part])


def run_stream(codebook, learning_rate, epochs, Z_train, y_train, Z_test, y_test, seed):
    model = KeyValueBottleneckClassifier(
        codebook=FrozenEstimator(codebook), value_update="sgd", learning_rate=learning_rate,
        partial_fit_max_iter=epochs, random_state=seed,
    )
    seconds, _ = timed(train_stream, model, Z_train, y_train, seed)
    return float(model.score(Z_test, y_test)), seconds


def main(argv=None):
    parser = make_parser(__doc__)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--encoder", default="raw")
    parser.add_argument(
        "--shape", type=parse_shape, default=None, help="CxKxD; a per-dataset default"
    )
    parser.add_argument("--paper-epochs", type=int, default=2000)
    parser.add_argument("--auto-epochs", type=comma_list(int), default=[1, 3, 10, 30, 100])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    Z_train, y_train, Z_test, y_test = load_embeddings(args.dataset, args.encoder)
    C, K, d = args.shape or DEFAULT_SHAPES[args.dataset]
    codebook = KeyCodebook(n_codebooks=C, n_keys=K, key_dim=d, random_state=args.seed)
    codebook.fit(Z_train)

    print(
        f"{args.dataset} ({args.encoder}), {len(Z_train)} train / {len(Z_test)} test, "
        f"keys {C}x{K}x{d} fitted on the training inputs, 5 class-incremental phases, "
        f"seed {args.seed}, {torch.get_num_threads()} torch thread(s)"
    )
    print(TABLE.header())
    paper_accuracy, seconds = run_stream(
        codebook, 0.3, args.paper_epochs, Z_train, y_train, Z_test, y_test, args.seed
    )
    print(TABLE.row("paper", 0.3, args.paper_epochs, paper_accuracy, seconds))
    reached = None
    for epochs in args.auto_epochs:
        accuracy, seconds = run_stream(
            codebook, "auto", epochs, Z_train, y_train, Z_test, y_test, args.seed
        )
        print(TABLE.row("learning_rate=auto", auto_learning_rate(C), epochs, accuracy, seconds))
        if reached is None and accuracy >= paper_accuracy - 0.01:
            reached = epochs
    if reached is None:
        print("learning_rate='auto' did not come within 1 point of the paper's run.")
    else:
        print(
            f"learning_rate='auto' is within 1 point of the paper's final accuracy after "
            f"{reached} epochs per phase: 1/{args.paper_epochs / reached:g} of its epochs."
        )


if __name__ == "__main__":
    main()
