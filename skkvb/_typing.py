"""Type aliases of the public signatures (the package ships ``py.typed``).

Hints describe what the estimators accept and return; checking inputs stays the
job of the validation at the public edge.
"""

from typing import Union

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import ArrayLike

__all__ = ["ArrayLike", "Device", "MatrixLike", "RandomStateLike"]

#: ``X``: anything numpy turns into a 2-D array, or a scipy sparse matrix or array
#: (``scipy.sparse.sparray`` exists from scipy 1.11; the declared floor is 1.10).
MatrixLike = Union[ArrayLike, sp.spmatrix, getattr(sp, "sparray", sp.spmatrix)]

#: ``device``: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a torch device.
Device = Union[str, torch.device]

#: ``random_state``, as in scikit-learn.
RandomStateLike = Union[int, np.random.RandomState, None]
