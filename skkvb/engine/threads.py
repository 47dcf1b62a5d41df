"""How the engine uses the CPU's threads.

torch's intra-op threads synchronise at every operation; for loops of many
small operations on a machine where another process holds a core, those
barriers stall. These helpers give the same parallelism with fewer barriers.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["single_threaded", "split_over_threads"]


def split_over_threads(work, n_items):
    """Run ``work(range)`` over contiguous ranges of ``range(n_items)``, one per
    torch CPU thread, each range on its own single-threaded worker.

    For loops of many small tensor operations (cache-sized blocks of the key
    search), one synchronisation per call replaces one per operation.
    ``torch.set_num_threads`` inside a worker applies to that worker only.
    """
    n_threads = min(torch.get_num_threads(), n_items)
    if n_threads <= 1:
        work(range(n_items))
        return
    bounds = [round(i * n_items / n_threads) for i in range(n_threads + 1)]

    def run_single_threaded(items):
        torch.set_num_threads(1)
        work(items)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        futures = [
            pool.submit(run_single_threaded, range(a, b)) for a, b in zip(bounds, bounds[1:])
        ]
        for future in futures:
            future.result()


@contextlib.contextmanager
def single_threaded():
    """Run the block with one torch CPU thread in the calling thread only.

    The value steps are sequences of small scatter/gather operations on one
    batch; intra-op threads add a barrier to each and stall when a core is
    busy. Other threads keep their own setting.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
