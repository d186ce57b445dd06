"""Type aliases used in the public signatures.

``ArrayLike`` is anything ``numpy.asarray`` accepts; a returned array is
an ``NDArray`` of the dtype named.
"""
from typing import Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

RandomState = Union[int, np.random.Generator, None]
"""None (fresh entropy), a non-negative int seed or a Generator."""

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

__all__ = ["ArrayLike", "FloatArray", "IntArray", "NDArray", "RandomState"]
