"""Export a trained run as a SavedModel with log_prob / sample / encode signatures.

    python launch/export.py --logdir=runs/default --out=runs/default/saved_model --num_samples=1000
"""

import os

import _common
from absl import app
from absl import flags
import tensorflow as tf

from tfp_iwae import export

F = flags.FLAGS
flags.DEFINE_string("logdir", "runs/default", "The training run's logdir.")
flags.DEFINE_string("out", None, "SavedModel directory (default: <logdir>/saved_model).")
flags.DEFINE_integer("num_samples", 1000, "k of the exported log_prob (L_k, nats).")
flags.DEFINE_integer("seed", 0, "Fixed stateless seed of the exported sampling.")


def main(argv):
    _common.quiet_absl()
    if F.num_samples < 1:
        _common.fail(f"--num_samples: expected an integer >= 1, got {F.num_samples}.")
    _, model, ckpt = _common.restore_run(F.logdir)
    out = F.out or os.path.join(F.logdir, "saved_model")
    try:
        export.export_saved_model(model, out, F.num_samples, F.seed)
    except (OSError, tf.errors.OpError) as e:
        _common.fail(f"--out: cannot write a SavedModel to {out!r}: {e}")
    print(f"exported {ckpt} to {out} (signatures log_prob [k={F.num_samples}], sample, "
          f"encode)")


if __name__ == "__main__":
    app.run(main)
