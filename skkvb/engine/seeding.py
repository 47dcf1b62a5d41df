"""Random draws of the engine, made on the CPU so that CPU and GPU runs with the
same seed make the same choices."""

import numpy as np
import torch

__all__ = ["draw_seed", "torch_generator"]


def draw_seed(rng):
    """Draw a 63-bit integer seed from a numpy ``RandomState``."""
    return int(rng.randint(0, np.iinfo(np.int32).max)) * 2**31 + int(
        rng.randint(0, np.iinfo(np.int32).max)
    )


def torch_generator(seed):
    """A CPU torch generator seeded with ``seed``."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator
