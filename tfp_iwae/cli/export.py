"""Export a trained run as a SavedModel with log_prob / sample / encode signatures.

    tfp-iwae-export --logdir=runs/default --out=runs/default/saved_model --num_samples=1000

An existing non-empty --out is refused unless --overwrite is given; then the new SavedModel
is written beside it first and replaces it whole (nothing of the old directory stays).
The SavedModel loads with plain `tf.saved_model.load`, without tfp_iwae or TensorFlow
Probability. (`python launch/export.py` in a checkout is the same command; every flag:
docs/cli.md.)
"""

import os
import shutil
import tempfile

from absl import flags
import tensorflow as tf

from tfp_iwae import export
from tfp_iwae.cli import common

F = flags.FLAGS


def define_flags(flag_values=F):
    """This command's flags."""
    fv = flag_values
    common.define_run_flags(fv)
    flags.DEFINE_string("out", None, "SavedModel directory (default: <logdir>/saved_model).",
                        flag_values=fv)
    flags.DEFINE_integer("num_samples", 1000, "k of the exported log_prob (L_k, nats).",
                         flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Fixed stateless seed of the exported sampling.",
                         flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty --out directory (all "
                      "of its contents are deleted).", flag_values=fv)


def check_out(out, logdir, overwrite):
    """Fails unless `out` is absent, empty, or (with --overwrite) a directory that holds
    no training run."""
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out) or os.path.islink(out):
        common.fail(f"--out {out!r} exists and is not a directory.")
    entries = sorted(os.listdir(out))
    if not entries:
        return
    if not overwrite:
        common.fail(f"--out {out!r} is not empty ({len(entries)} entries, e.g. "
                    f"{entries[0]!r}); pass --overwrite to replace it, or choose another "
                    f"--out.")
    real_out, real_logdir = os.path.realpath(out), os.path.realpath(logdir)
    if (os.path.commonpath([real_out, real_logdir]) == real_out or
            {"checkpoints", "run_config.json"} & set(entries)):
        common.fail(f"--out {out!r} holds a training run (checkpoints or run_config.json): "
                    f"not replaced even with --overwrite; choose another --out.")


def write_replacing(model, out):
    """Writes the SavedModel into a new sibling directory, then puts it in place of `out`."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.new-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fresh, 0o777 & ~umask)  # mkdtemp's 0700 would stay on the final directory
    try:
        export.export_saved_model(model, fresh, F.num_samples, F.seed)
        old = None
        if os.path.lexists(out):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
            os.replace(out, os.path.join(old, "x"))
        os.replace(fresh, out)
        if old:
            shutil.rmtree(old)
    finally:
        if os.path.isdir(fresh):
            shutil.rmtree(fresh)


def main(argv):
    common.quiet_absl()
    common.check_flags([
        ("num_samples", F.num_samples, common.COUNT, "an integer >= 1"),
        ("seed", F.seed, common.COUNT_OR_ZERO, "an integer >= 0")])
    out = F.out or os.path.join(F.logdir, "saved_model")
    check_out(out, F.logdir, F.overwrite)
    _, model, ckpt, _ = common.restore_run(F.logdir, F.checkpoint)
    try:
        write_replacing(model, out)
    except (OSError, tf.errors.OpError) as e:
        common.fail(f"--out: cannot write a SavedModel to {out!r}: {e}")
    print(f"exported {ckpt} to {out} (signatures log_prob [k={F.num_samples}], sample, "
          f"encode)")

