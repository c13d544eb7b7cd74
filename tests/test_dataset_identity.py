"""Known datasets are checked at load against their canonical facts (`data.CANONICAL`: the
number of images of each stored split and, where known, its mean intensity), so that other
files under a known name are refused instead of trained on; `allow_nonstandard=True` lets a
subset or other images through.

Real files are used where present (MNIST under ../shared/data/mnist, Debian's Fashion-MNIST);
those tests skip without them, and each check also has a test on small synthetic IDX files.
"""

import os
import shutil

import numpy as np
import pytest

from tfp_iwae import data
from helpers import ROOT

MNIST = os.path.join(os.path.dirname(ROOT), "shared", "data", "mnist")
FASHION = "/usr/share/datasets/fashion-mnist"
needs_mnist = pytest.mark.skipif(
    not os.path.exists(os.path.join(MNIST, "train-images-idx3-ubyte.gz")),
    reason="the full MNIST IDX files (../shared/data/mnist) are not on this machine")
needs_fashion = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION, "train-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed (.ci/run installs it)")

TRAIN, TEST = "train-images-idx3-ubyte", "t10k-images-idx3-ubyte"


def write_images(path, n, level):
    """An uncompressed IDX image file of n 28x28 uint8 images, every pixel `level`
    (mean intensity level / 255); uncompressed, so that 60,000 images write in a blink."""
    header = bytes([0, 0, 0x08, 3]) + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
    with open(path, "wb") as f:
        f.write(header + np.full((n, 28, 28), level, np.uint8).tobytes())


def idx_dir(tmp_path, train=None, test=None):
    """A data_dir with IDX image files: train/test given as (number of images, level)."""
    for stem, spec in ((TRAIN, train), (TEST, test)):
        if spec is not None:
            write_images(tmp_path / stem, *spec)
    return str(tmp_path)


def test_the_table_covers_every_dataset_read_from_files_or_tfds():
    assert set(data.CANONICAL) == set(data.DATASETS) - {"mnist_5k"}
    assert data.CANONICAL["mnist"].sizes == {"train": 60000, "test": 10000}
    assert data.CANONICAL["binarized_mnist"].sizes == {"train": 50000, "validation": 10000,
                                                       "test": 10000}
    # DATASETS keeps its (tfds name, validation size, note) entries
    assert all(len(entry) == 3 for entry in data.DATASETS.values())


# ---- the t10k files copied as the train files --------------------------------------------
T10K_AS_TRAIN = (r"mnist train split: .*train-images-idx3-ubyte(\.gz)? holds 10,000 images, "
                 r"the train split of MNIST has 60,000 \(are these the t10k files\?\)\. .*"
                 r"allow_nonstandard=True")


def test_t10k_files_copied_as_the_train_files_are_refused(tmp_path):
    # Before: training ran on the 10,000 test images (train and test the same images).
    data_dir = idx_dir(tmp_path, train=(10000, 33), test=(10000, 33))
    with pytest.raises(data.DataError, match=T10K_AS_TRAIN):
        data.load_array("mnist", "train", data_dir=data_dir)
    with pytest.raises(data.DataError, match=T10K_AS_TRAIN):
        data.load("mnist", "validation", data_dir=data_dir)
    with pytest.raises(data.DataError, match=T10K_AS_TRAIN):
        data.active_units_images("mnist", "dynamic", data_dir=data_dir)
    assert len(data.load_array("mnist", "test", data_dir=data_dir)) == 10000  # the right size


@needs_mnist
def test_real_t10k_files_copied_as_the_train_files_are_refused(tmp_path):
    for stem in (TRAIN, TEST):
        shutil.copy(os.path.join(MNIST, TEST + ".gz"), tmp_path / f"{stem}.gz")
    with pytest.raises(data.DataError, match=T10K_AS_TRAIN):
        data.load_array("mnist", "train+validation", data_dir=str(tmp_path))


# ---- MNIST's files under another dataset's name ------------------------------------------
def test_files_of_the_right_size_but_another_datasets_mean_are_refused(tmp_path):
    # 60,000 + 10,000 images of mean 33/255 = 0.129 (MNIST-like) under kmnist, and a test
    # split of mean 73/255 = 0.286 (Fashion-MNIST-like) under mnist.
    data_dir = idx_dir(tmp_path, train=(60000, 33), test=(10000, 73))
    with pytest.raises(data.DataError, match=(
            r"kmnist: the train images in .*train-images-idx3-ubyte have mean intensity "
            r"0\.129, Kuzushiji-MNIST's is 0\.192 \(0\.129 is MNIST's\): these images do not "
            r"match dataset name='kmnist'\. .*allow_nonstandard=True")):
        data.load_array("kmnist", "validation", data_dir=data_dir)
    with pytest.raises(data.DataError, match=r"mnist: the test images in .*t10k-images-idx3-"
                                             r"ubyte have mean intensity 0\.286, MNIST's is "
                                             r"0\.133 \(0\.286 is Fashion-MNIST's\)"):
        data.load_array("mnist", "test", data_dir=data_dir)
    assert len(data.load_array("kmnist", "train", data_dir=data_dir,
                               allow_nonstandard=True)) == 59600


def test_files_of_another_size_are_refused_naming_the_datasets_of_that_size(tmp_path):
    data_dir = idx_dir(tmp_path, train=(60, 33), test=(10000, 33))
    with pytest.raises(data.DataError, match=(
            r"omniglot test split: .*t10k-images-idx3-ubyte holds 10,000 images, the test "
            r"split of tfds Omniglot has 13,180 \(10,000 is the size of the test split of "
            r"MNIST, Fashion-MNIST, Kuzushiji-MNIST, binarised MNIST \(Larochelle & Murray\)\)")):
        data.load_array("omniglot", "test", data_dir=data_dir)
    with pytest.raises(data.DataError, match=r"emnist/letters train split: .* holds 60 "
                                             r"images, the train split of EMNIST letters "
                                             r"has 88,800\."):
        data.load_array("emnist/letters", "train", data_dir=data_dir)


@needs_mnist
def test_real_mnist_files_under_kmnist_and_omniglot_are_refused():
    # Before: both trained on MNIST, labelled kmnist or omniglot.
    with pytest.raises(data.DataError, match=r"kmnist: the train images in .*train-images-"
                                             r"idx3-ubyte.gz have mean intensity 0\.131, "
                                             r"Kuzushiji-MNIST's is 0\.192 \(0\.131 is "
                                             r"MNIST's\)"):
        data.load_array("kmnist", "train", data_dir=MNIST)
    with pytest.raises(data.DataError, match=r"omniglot train split: .* holds 60,000 images, "
                                             r"the train split of tfds Omniglot has 19,280"):
        data.load_array("omniglot", "train", data_dir=MNIST)
    with pytest.raises(data.DataError, match=r"omniglot test split: .* holds 10,000 images"):
        data.load_array("omniglot", "test", data_dir=MNIST)


def test_npz_and_amat_files_are_checked_too(tmp_path):
    np.savez(tmp_path / "test.npz", x=np.zeros((7, 784), np.uint8))
    with pytest.raises(data.DataError, match=r"fashion_mnist test split: .*test.npz holds 7 "
                                             r"images, the test split of Fashion-MNIST has 10,000"):
        data.load_array("fashion_mnist", "test", data_dir=str(tmp_path))
    amat = tmp_path / "amat"
    amat.mkdir()
    for split in ("train", "valid", "test"):
        np.savetxt(amat / f"binarized_mnist_{split}.amat", np.zeros((3, 784)), fmt="%d")
    with pytest.raises(data.DataError, match=r"binarized_mnist validation split: .*binarized_"
                                             r"mnist_valid.amat holds 3 images, the validation "
                                             r"split of binarised MNIST \(Larochelle & "
                                             r"Murray\) has 10,000"):
        data.load_array("binarized_mnist", "validation", data_dir=str(amat))
    assert data.load_array("binarized_mnist", "train+validation", data_dir=str(amat),
                           allow_nonstandard=True).shape == (6, 784)


def test_tfds_prepared_data_is_checked_too():
    # tfds' mock data (5 random examples per split, no files) stands for a prepared
    # dataset of the wrong size.
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(data.DataError, match=r"kmnist test split: tfds' 'kmnist' data in "
                                                 r"its default data_dir holds 5 images, the "
                                                 r"test split of Kuzushiji-MNIST has 10,000"):
            data.load_array("kmnist", "test", source="tfds", download=False)
        assert data.load_array("kmnist", "test", source="tfds", download=False,
                               allow_nonstandard=True).shape == (5, 784)


# ---- the real datasets pass; allow_nonstandard lets a subset through ---------------------
@needs_fashion
def test_the_real_fashion_mnist_files_pass_and_match_the_recorded_means():
    facts = data.CANONICAL["fashion_mnist"]
    for split in ("train+validation", "test"):
        x = data.load_array("fashion_mnist", split, data_dir=FASHION)
        stored = "train" if split == "train+validation" else split
        assert len(x) == facts.sizes[stored]
        assert abs(x.mean() - facts.means[stored]) < 1e-4


@needs_mnist
def test_the_real_mnist_files_pass_and_match_the_recorded_means():
    facts = data.CANONICAL["mnist"]
    for split in ("train+validation", "test"):
        x = data.load_array("mnist", split, data_dir=MNIST)
        stored = "train" if split == "train+validation" else split
        assert len(x) == facts.sizes[stored]
        assert abs(x.mean() - facts.means[stored]) < 1e-4
    assert len(data.load_array("mnist", "validation", data_dir=MNIST)) == 400


def test_allow_nonstandard_lets_a_subset_through(tmp_path):
    data_dir = idx_dir(tmp_path, train=(1000, 33), test=(200, 33))
    with pytest.raises(data.DataError, match=r"holds 1,000 images, the train split of MNIST "
                                             r"has 60,000\. .*allow_nonstandard=True"):
        data.load_array("mnist", "train", data_dir=data_dir)
    kw = dict(data_dir=data_dir, allow_nonstandard=True)
    assert data.load_array("mnist", "train", **kw).shape == (600, 784)
    assert data.load_array("mnist", "test", **kw).shape == (200, 784)
    assert next(iter(data.load("mnist", "train", batch_size=100, **kw))).shape == (100, 784)
    assert data.active_units_images("mnist", "none", num_images=50, **kw).shape == (50, 784)
    # a user's own images under a known name: other statistics too
    (tmp_path / "own").mkdir()
    other = idx_dir(tmp_path / "own", train=(60000, 200), test=(10000, 200))
    assert abs(data.load_array("kmnist", "train+validation", data_dir=other,
                               allow_nonstandard=True).mean() - 200 / 255) < 1e-6


@pytest.mark.slow
def test_the_train_launcher_refuses_other_files_unless_allowed(tmp_path):
    # The t10k files (10,000 images) in place of MNIST's train files: refused with both
    # sizes named; --allow_nonstandard_data trains on them (and records the flag).
    from helpers import FAST, run
    (tmp_path / "data").mkdir()
    data_dir = idx_dir(tmp_path / "data", train=(10000, 40), test=(10000, 40))
    args = ["--dataset=mnist", f"--data_dir={data_dir}", f"--logdir={tmp_path / 'run'}",
            "--max_steps=10", "--eval_every=0", "--noxla", *FAST]
    proc = run("train.py", *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "holds 10,000 images" in proc.stderr and "60,000" in proc.stderr
    assert "--allow_nonstandard_data" in proc.stderr
    proc = run("train.py", *args, "--allow_nonstandard_data")
    assert proc.returncode == 0, proc.stderr[-2000:]
