"""The run directory: its lock (one training process per logdir) and run_config.json."""

import json
import os
import socket
import subprocess
import sys

import pytest

from tfp_iwae import rundir, trainer


def write_lock(logdir, **holder):
    with open(os.path.join(logdir, rundir.LOCK_FILE), "w") as f:
        json.dump(holder, f)


def dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_names_host_and_pid_and_refuses_a_second_holder(tmp_path):
    with rundir.RunLock(str(tmp_path)) as lock:
        holder = json.loads((tmp_path / rundir.LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # A second open of the lock (another process, or this one again) is refused and
        # told who holds it: the holder is alive and holds the file's flock.
        with pytest.raises(rundir.RunDirError,
                           match=rf"in use by PID {os.getpid()} on host "
                                 rf"'{socket.gethostname()}'.*stop it first"):
            rundir.RunLock(str(tmp_path)).acquire()
        assert lock.held
    assert not (tmp_path / rundir.LOCK_FILE).exists()  # released on leaving


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(KeyError):
        with rundir.RunLock(str(tmp_path)):
            raise KeyError("boom")
    assert not (tmp_path / rundir.LOCK_FILE).exists()
    rundir.RunLock(str(tmp_path)).acquire().release()  # and can be taken again


def test_stale_lock_of_a_dead_process_is_removed(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, host=socket.gethostname(), pid=pid, started="earlier")
    notes = []
    with rundir.RunLock(str(tmp_path), on_stale=notes.append):
        assert json.loads((tmp_path / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(notes) == 1 and f"PID {pid}" in notes[0] and "no longer runs" in notes[0]


def test_lock_of_a_live_pid_that_holds_no_flock_is_stale(tmp_path):
    # The PID was reused by an unrelated live process (here: our parent): the dead
    # holder's flock went with it, so the lock does not block.
    write_lock(tmp_path, host=socket.gethostname(), pid=os.getppid())
    notes = []
    with rundir.RunLock(str(tmp_path), on_stale=notes.append):
        pass
    assert "no longer holds it" in notes[0]


def test_lock_from_another_host_is_never_removed(tmp_path):
    write_lock(tmp_path, host="elsewhere.example", pid=dead_pid())
    with pytest.raises(rundir.RunDirError, match=r"in use by PID \d+ on host "
                                                 r"'elsewhere.example'.*delete the lock file"):
        rundir.RunLock(str(tmp_path)).acquire()
    assert (tmp_path / rundir.LOCK_FILE).exists()


def test_empty_lock_file_blocks_only_within_the_grace_period(tmp_path):
    (tmp_path / rundir.LOCK_FILE).write_text("")  # a writer between create and write
    with pytest.raises(rundir.RunDirError, match="unknown process"):
        rundir.RunLock(str(tmp_path)).acquire()
    old = os.path.getmtime(tmp_path / rundir.LOCK_FILE) - 60
    os.utime(tmp_path / rundir.LOCK_FILE, (old, old))  # ... that died a minute ago
    rundir.RunLock(str(tmp_path)).acquire().release()


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory this process cannot create files in (root ignores permission bits:
    then a sysfs directory, where nobody can)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for candidate in (str(ro), "/sys/kernel"):
        try:
            os.close(os.open(os.path.join(candidate, ".probe"), os.O_CREAT | os.O_WRONLY))
            os.unlink(os.path.join(candidate, ".probe"))
        except OSError:
            yield candidate
            break
    else:
        pytest.skip("no unwritable directory available")
    ro.chmod(0o755)


def test_unwritable_logdir_is_a_message_not_a_traceback(unwritable_dir):
    with pytest.raises(rundir.RunDirError, match=r"^logdir=.* is not writable: cannot "
                                                 r"create the lock file"):
        rundir.RunLock(unwritable_dir).acquire()
    # Through train(): refused before anything is written (it used to die with an OSError
    # on run_config.json.tmp).
    with pytest.raises(rundir.RunDirError, match="is not writable"):
        trainer.train(trainer.RunConfig(logdir=unwritable_dir, max_steps=1, eval_every=0),
                      log=lambda m: None)


@pytest.mark.parametrize("text, match", [
    ("", r"run_config.json' is empty"),
    ('{"dataset": "mnist_5k",', r"run_config.json' is not valid JSON \(Expecting"),
    ("[1, 2]", r"run_config.json' holds a JSON list, expected an object"),
], ids=["empty", "truncated", "list"])
def test_unreadable_run_config_names_the_file(tmp_path, text, match):
    (tmp_path / rundir.CONFIG_FILE).write_text(text)
    with pytest.raises(rundir.RunDirError, match=match):
        rundir.read_config(str(tmp_path))
    with pytest.raises(trainer.TrainingError, match=match):  # evaluate / sample / export
        trainer.load_config(str(tmp_path))
    with pytest.raises(rundir.RunDirError, match=match):  # train: before any work
        trainer.train(trainer.RunConfig(logdir=str(tmp_path), max_steps=1), log=lambda m: None)


@pytest.mark.parametrize("flags, match", [
    ({"stochastic_layers": "two"}, r"flag 'stochastic_layers' has value 'two', expected int"),
    ({"learning_rate": None}, r"flag 'learning_rate' has value None, expected float"),
    ({"xla": 1}, r"flag 'xla' has value 1, expected bool"),
    ({"colour": "red"}, r"unknown flags \['colour'\]"),
])
def test_run_config_with_wrong_values_names_the_flag(tmp_path, flags, match):
    good = json.loads(json.dumps(trainer.RunConfig().__dict__))
    (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps({**good, **flags}))
    with pytest.raises(trainer.TrainingError, match=match):
        trainer.load_config(str(tmp_path))
