"""Downloads through tensorflow-datasets (`download=True`, the default; `download=False`,
the train command's `--nodownload`).

No test here makes traffic to any non-loopback address: every download probe is pointed
at 127.0.0.1 (a closed port, or a listener opened by the test), and tfds' own download is
replaced where a probe succeeds.
"""

import socket
import threading
import time

import pytest

from tfp_iwae import data, trainer


def closed_port():
    """A loopback port nobody listens on (a connection to it is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def probe_loopback(monkeypatch):
    """Points every dataset's download probe at a closed loopback port; returns a setter."""
    def point_at(port):
        monkeypatch.setattr(data, "DOWNLOAD_HOSTS", {n: ("127.0.0.1", port)
                                                     for n in data.DOWNLOAD_HOSTS})
    point_at(closed_port())
    return point_at


def test_every_tfds_dataset_has_a_probe_host():
    assert set(data.DOWNLOAD_HOSTS) == {n for n, (tfds_name, _, _) in data.DATASETS.items()
                                        if tfds_name}


def test_offline_download_fails_within_seconds_naming_data_dir_and_nodownload(tmp_path):
    # download=True is the default (as in tfds.load): missing data is downloaded, but with
    # no network the probe fails at once and says how to run without it.
    t0 = time.perf_counter()
    with pytest.raises(data.DataError) as e:
        data.load_array("kmnist", "test", data_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 20  # (tfds' builder itself takes a few seconds)
    msg = str(e.value)
    assert "data_dir=" in msg and "download=False" in msg and "'kmnist'" in msg
    assert "--" not in msg  # the library names its arguments; the commands say flags
    assert "ConnectionRefusedError" in msg and "no network?" in msg
    with pytest.raises(data.DataError, match="download=False"):
        data.load("mnist", "train", data_dir=str(tmp_path / "absent"))


def test_a_relative_data_dir_to_download_into_is_named_with_its_resolved_path(
        tmp_path, monkeypatch):
    # A data_dir that does not exist is where tfds would download to (creating it): the
    # error names the absolute path it resolved to from the current directory.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(data.DataError, match="download=False") as e:
        data.load_array("kmnist", "test", data_dir="new/tfds")
    assert (f"under data_dir='new/tfds' (from the current directory "
            f"{tmp_path} it resolves to {tmp_path}/new/tfds, which does not exist)"
            ) in str(e.value), str(e.value)


def test_a_probe_that_hangs_is_abandoned_at_its_timeout(monkeypatch, tmp_path):
    # A name lookup or connect that never returns (which a socket timeout does not bound
    # for the lookup) still ends the run after DOWNLOAD_PROBE_TIMEOUT_S seconds.
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        raise OSError("released by the test")

    monkeypatch.setattr(socket, "create_connection", hang)
    monkeypatch.setattr(data, "DOWNLOAD_PROBE_TIMEOUT_S", 0.5)
    try:
        t0 = time.perf_counter()
        with pytest.raises(data.DataError, match=r"did not answer \(no connection within "
                                                 r"0.5 s\).*download=False"):
            data.load_array("kmnist", "test", data_dir=str(tmp_path), source="tfds")
        assert time.perf_counter() - t0 < 5
    finally:
        release.set()


def test_a_failing_tfds_download_becomes_a_data_error(probe_loopback, monkeypatch, tmp_path):
    # The probe succeeds (a loopback listener), then tfds' own download fails: the error
    # is a DataError with the same advice, naming tfds' exception.
    import tensorflow_datasets as tfds
    calls = []

    def fail(self, *args, **kwargs):
        calls.append(self.name)
        raise ConnectionError("Max retries exceeded with url: kmnist-test-imgs.npz")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe_loopback(server.getsockname()[1])
        # The probe connects, so the error is tfds' own (the download was attempted).
        with pytest.raises(data.DataError, match=r"tfds could not download and prepare "
                                                 r"'kmnist' under data_dir=.*ConnectionError: "
                                                 r"Max retries.*data_dir=.*download=False"):
            data.load_array("kmnist", "test", data_dir=str(tmp_path), source="tfds")
    assert calls == ["kmnist"]


def test_nodownload_never_probes_and_names_the_argument(monkeypatch, tmp_path):
    monkeypatch.setattr(socket, "create_connection",
                        lambda *a, **kw: pytest.fail("probed the network"))
    with pytest.raises(data.DataError, match=r"not prepared under data_dir=.* and "
                                             r"downloading is off \(download=False\)"):
        data.load_array("kmnist", "test", data_dir=str(tmp_path), download=False)


@pytest.mark.parametrize("download,match", [
    (False, r"downloading is off \(download=False"),
    (True, r"cannot be downloaded: 127.0.0.1:\d+ did not answer.*download=False"),
])
def test_run_config_download_reaches_the_data_loader(tmp_path, download, match):
    # RunConfig.download (flag --[no]download of launch/train.py) decides whether the
    # training run may download; it is not a model field, so a resumed run may change it.
    assert "download" not in trainer.MODEL_FIELDS and trainer.RunConfig().download is True
    config = trainer.RunConfig(dataset="kmnist", data_dir=str(tmp_path / "data"),
                               logdir=str(tmp_path / "run"), download=download)
    with pytest.raises(data.DataError, match=match):
        trainer.train(config, log=lambda msg: None)
