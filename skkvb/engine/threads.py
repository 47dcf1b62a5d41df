"""How the engine uses the CPU's threads.

torch's intra-op threads synchronise at every operation; for loops of many
small operations on a machine where another process holds a core, those
barriers stall. So the engine spends its threads where one synchronisation
covers a lot of work -- the nearest-key search, split over workers with
:func:`split_over_threads` -- and runs sequences of small operations (EMA
statistics, value steps, decoding) on one thread (:func:`single_threaded`).

The number of threads is the caller's: torch's setting in the calling thread
when the engine is called (:func:`torch_threads` sets it for a block).
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["single_threaded", "split_over_threads", "torch_threads"]


def split_over_threads(work, n_items, n_threads=None):
    """Run ``work(range)`` over contiguous ranges of ``range(n_items)``, one per
    thread, each range on its own single-threaded worker.

    ``n_threads`` defaults to torch's setting in the calling thread. For loops
    of many small tensor operations (cache-sized blocks of the key search),
    one synchronisation per call replaces one per operation.
    ``torch.set_num_threads`` inside a worker applies to that worker only.
    """
    if n_threads is None:
        n_threads = torch.get_num_threads()
    n_threads = min(n_threads, n_items)
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
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch CPU threads in the calling thread,
    and put the previous setting back afterwards, also when the block raises.

    Other threads keep their own setting.
    """
    previous = torch.get_num_threads()
    if n_threads != previous:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def single_threaded():
    """Run the block with one torch CPU thread in the calling thread only.

    The value steps are sequences of small scatter/gather operations on one
    batch; intra-op threads add a barrier to each and stall when a core is
    busy. Other threads keep their own setting.
    """
    return torch_threads(1)
