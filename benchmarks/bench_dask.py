"""Encoding speed-up with dask: FrozenBackboneTransformer on 1 vs 2 worker processes.

A torchvision model with random weights (``weights=None``; nothing is
downloaded, and weights do not change the speed) embeds ``--n-images`` uint8
images of ``--image-size`` pixels. The images are a dask array made on the
workers, ``--chunk`` images per block, as a real dataset would be read there
(e.g. from files or zarr); ``transform`` turns it into a lazy dask array of
embeddings, one task per block. Each cluster is a ``LocalCluster`` on
127.0.0.1 with one thread per worker (distributed sets ``OMP_NUM_THREADS=1``
for its workers, so torch runs one intra-op thread each).

The images are persisted in the workers' memory first. Printed: seconds to
compute all embeddings (best of ``--repeats``, runs alternating between the
settings, after one warm-up block per worker that starts torch there), images/s
and the speed-up over the first cluster; the seconds of a one-image compute,
which is mostly sending the encoder to the workers (part of every compute);
and the same encoder in this process on one torch thread without dask, for
reference. The load average is printed too: other jobs on the machine slow
every figure.

Usage::

    python benchmarks/bench_dask.py [--model resnet18] [--n-images 512]
        [--image-size 224] [--chunk 32] [--workers 1 2] [--repeats 2]
"""

import logging
import os
import warnings
from functools import partial

import dask
import dask.array as da
import numpy as np
import torch
import torchvision
from distributed import Client, LocalCluster

from skkvb import FrozenBackboneTransformer

from _common import load_average, make_parser, timed  # benchmarks/_common.py, next to this script


def make_images(n_images, image_size, chunk):
    """Random uint8 images (N, H, W, 3), generated block by block by the workers."""
    shape = (n_images, image_size, image_size, 3)
    chunks = (chunk, image_size, image_size, 3)
    return da.random.RandomState(0).randint(0, 256, size=shape, chunks=chunks).astype(np.uint8)


def start_cluster(n_workers):
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    client = Client(cluster, set_as_default=False)
    client.wait_for_workers(n_workers)
    return cluster, client


def compute(client, encoder, images):
    return client.compute(encoder.transform(images)).result()


def main():
    parser = make_parser(__doc__)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=32, help="images per dask block")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    # The graph of every compute holds the encoder (twice the model's weights:
    # the backbone parameter and the frozen copy); its sending is timed, not reported.
    dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"})
    warnings.filterwarnings("ignore", "Port .* is already in use")  # the second cluster's
    logging.getLogger("distributed").setLevel(logging.ERROR)  # the in-process schedulers' logs

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    images = make_images(args.n_images, args.image_size, args.chunk)
    encoder = FrozenBackboneTransformer(model, device="cpu", batch_size=args.chunk)
    encoder.fit(images)  # reads one image
    local = images.compute()
    size = f"{args.image_size}x{args.image_size}"
    print(
        f"{args.model} (random weights, {encoder.embedding_dim_}-d embeddings), "
        f"{args.n_images} images of {size}, {args.chunk} per block, CPU, best of "
        f"{args.repeats}; {os.cpu_count()} CPUs, load average {load_average()}"
    )

    clusters = {n_workers: start_cluster(n_workers) for n_workers in args.workers}
    runs = {"local": lambda: encoder.transform(local)}
    for n_workers, (_, client) in clusters.items():
        on_workers = client.persist(images)  # the dataset, loaded where it is encoded
        warm_up = on_workers[: args.chunk * n_workers]  # starts torch on every worker
        client.compute(encoder.transform(warm_up)).result()
        runs[n_workers] = partial(compute, client, encoder, on_workers)
        runs[f"{n_workers}, one image"] = partial(compute, client, encoder, on_workers[:1])
    seconds = {name: [] for name in runs}
    outputs = {}
    try:
        for _ in range(args.repeats):  # alternating, so that a busy spell hits every setting
            for name, run in runs.items():
                elapsed, outputs[name] = timed(run)
                seconds[name].append(elapsed)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()

    best = {name: min(times) for name, times in seconds.items()}
    report("in this process, 1 thread, no dask", best["local"], args.n_images)
    for n_workers in args.workers:
        gap = float(np.abs(outputs[n_workers] - outputs["local"]).max())
        speed_up = best[args.workers[0]] / best[n_workers]
        report(
            f"LocalCluster, {n_workers} worker(s) x 1 thread", best[n_workers], args.n_images,
            f"  speed-up {speed_up:.2f}  max |diff| {gap:.1e}",
        )
        report("  one image (model sent to workers)", best[f"{n_workers}, one image"], 1)
    print(f"load average after: {load_average()}")


def report(label, seconds, n_images, extra=""):
    print(f"{label:<36} {seconds:>7.1f} s {n_images / seconds:>7.1f} img/s{extra}")


if __name__ == "__main__":
    main()
