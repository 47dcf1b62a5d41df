"""Throughput of FrozenBackboneTransformer.transform against a plain torch loop.

Both sides run the same frozen model, at the same batch size, on the same uint8
(N, H, W, 3) images, with the same preprocessing, on the CPU:

- "scale": pixels converted to float and scaled to [0, 1] (``preprocess="auto"``
  without torchvision weights); the plain loop does it per batch.
- "weights transforms": torchvision's ImageClassification transform of the
  model's DEFAULT weights (resize, centre crop, normalise), which
  ``preprocess="auto"`` uses with torchvision weights -- here given as a local
  state_dict file, as offline users do.

The weights are random (nothing is downloaded); they do not change the speed.
The plain loop replaces the final layer with ``nn.Identity`` so that both
return the same embeddings. Runs alternate between the two sides and the best
of ``--repeats`` is kept for each.

Usage::

    python benchmarks/bench_backbone.py [--model resnet50] [--image-size 224]
        [--n-images 64] [--batch-size 64] [--repeats 3] [--threads N]
"""

import copy
import os
import tempfile

import numpy as np
import torch
import torchvision
from torch import nn

from skkvb._backbone import FrozenBackboneTransformer

from _common import Table, make_parser, timed  # benchmarks/_common.py, next to this script

TABLE = Table(
    [("preprocessing", 20, ""), ("plain torch loop", 18, ""), ("transformer", 14, "")]
    + [("ratio", 7, ".3f"), ("max |diff|", 11, ".2e")],
    sep=" ",
)


def plain_loop(model, images, batch_size, preprocess):
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            chunks.append(model(preprocess(batch)).numpy())
    return np.concatenate(chunks)


def scale(batch):
    return batch.float().div_(255)


def best_rates(embedder, model, images, repeats, loop_preprocess):
    """Best images/s of the plain loop and of the transformer, and the largest gap."""
    embedder.fit(images[:1])
    headless = copy.deepcopy(model).eval()
    _replace(headless, embedder.layer_, nn.Identity())  # the layer whose input is the embedding
    loop_rates, our_rates = [], []
    for _ in range(repeats):  # alternating, so that a busy spell hits both sides
        seconds, expected = timed(
            plain_loop, headless, images, embedder.batch_size, loop_preprocess
        )
        loop_rates.append(len(images) / seconds)
        seconds, Z = timed(embedder.transform, images)
        our_rates.append(len(images) / seconds)
    return max(loop_rates), max(our_rates), float(np.abs(Z - expected).max())


def _replace(model, name, module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def main():
    parser = make_parser(__doc__)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n-images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    default = torchvision.models.get_model_weights(args.model).DEFAULT
    rng = np.random.RandomState(0)
    images = rng.randint(
        0, 256, (args.n_images, args.image_size, args.image_size, 3), dtype=np.uint8
    )

    size = f"{args.image_size}x{args.image_size}"
    print(
        f"{args.model} (random weights), {args.n_images} images of {size}, batch "
        f"{args.batch_size}, CPU, {torch.get_num_threads()} torch threads, best of {args.repeats}"
    )
    print(TABLE.header())
    with tempfile.TemporaryDirectory() as folder:
        # A local file named like the torchvision download: preprocess="auto" then
        # picks that entry's transforms, as it does offline with real weights.
        weights_file = os.path.join(folder, os.path.basename(default.url))
        torch.save(model.state_dict(), weights_file)
        rows = [
            ("scale", FrozenBackboneTransformer(model, device="cpu"), scale),
            (
                "weights transforms",
                FrozenBackboneTransformer(args.model, weights=weights_file, device="cpu"),
                default.transforms(),
            ),
        ]
        for label, embedder, loop_preprocess in rows:
            embedder.set_params(batch_size=args.batch_size)
            loop, ours, gap = best_rates(embedder, model, images, args.repeats, loop_preprocess)
            print(TABLE.row(label, f"{loop:.2f} img/s", f"{ours:.2f} img/s", ours / loop, gap))


if __name__ == "__main__":
    main()
