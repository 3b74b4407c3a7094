"""Entry point: ``python -m launch.main --config=launch/configs/<name>.py --workdir=DIR``.

Kept short on purpose (as flax's examples do): it parses flags, reports the
process layout and hands over to :func:`launch.train.train_and_evaluate`.
Override any config value with ``--config.<key>=<value>``; an unknown key is an
error.
"""

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, summary and plots.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    import jax  # Imported after flag parsing so --jax_* flags could apply first.

    from launch import train

    logging.info(
        "process %d of %d, devices %s", jax.process_index(), jax.process_count(), jax.devices()
    )
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
