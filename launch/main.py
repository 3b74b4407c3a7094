"""Entry point: ``python -m decentjax.launch.main --config=launch/configs/<name>.py --workdir=DIR``.

Kept short on purpose (as flax's examples do): it parses flags, starts JAX's
distributed runtime when asked, reports the process layout and hands over to
:func:`launch.train.train_and_evaluate`. Override any config value with
``--config.<key>=<value>``; an unknown key is an error. Rerunning a command with
the same ``--workdir`` resumes from its newest checkpoint; a workdir holding runs of a
different config is refused unless ``--on_mismatch=new`` (a fresh ``<workdir>-1``) or
``--on_mismatch=overwrite``. ``--workdir`` may be a URI (``gs://bucket/run``).

Quiet by default: INFO logs of absl, orbax and JAX are off, so a run prints its own
lines and progress bars; ``--verbosity=0`` (absl's flag: 0 is INFO, 1 DEBUG) shows them.

Multi-process: ``--distributed`` calls ``jax.distributed.initialize()`` with no
arguments (Cloud TPU pods and SLURM/Open MPI clusters detect their layout), or
with ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on
machines that don't. Every process runs the same command; each builds only its
own devices' shards of the data.
"""

import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for metrics, summary, plots and checkpoints.")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_bool("distributed", False, "Start jax.distributed (auto-detected cluster).")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0, for --distributed.")
flags.DEFINE_integer("num_processes", None, "Number of processes, for --distributed.")
flags.DEFINE_integer("process_id", None, "This process's index, for --distributed.")
flags.DEFINE_integer("local_devices", None, "Fake this many CPU devices in this process.")
flags.DEFINE_enum(
    "on_mismatch",
    "refuse",
    ["refuse", "new", "overwrite"],
    "When --workdir holds runs of a different config: refuse, start <workdir>-1, or "
    "overwrite them.",
)
flags.mark_flags_as_required(["config", "workdir"])


def quiet_logs() -> None:
    """Shows warnings and errors only, unless ``--verbosity`` was given.

    Orbax logs through absl (a few dozen INFO lines per checkpoint) and JAX through
    Python loggers; both pass through absl's handler on the root logger.
    """
    if FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.WARNING)
    for name in ("absl", "orbax", "jax"):
        std_logging.getLogger(name).setLevel(std_logging.WARNING)


def main(argv):
    del argv
    quiet_logs()
    import jax  # Imported after flag parsing so the device flags apply before JAX starts.

    if FLAGS.local_devices:
        jax.config.update("jax_num_cpu_devices", FLAGS.local_devices)
    if FLAGS.distributed or FLAGS.coordinator_address:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    from decentjax.launch import train, workdir

    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    try:
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir, on_mismatch=FLAGS.on_mismatch)
    except workdir.ConfigMismatchError as error:
        raise SystemExit(f"launch.main: {error}") from None  # The message says it all.


if __name__ == "__main__":
    app.run(main)
