"""Train an LSTM seq2seq translator.

    python train.py --config configs/quickstart.py --workdir runs/quickstart
    python train.py --config configs/multi30k.py --workdir runs/m30k --config.train.num_steps=20000

Running the same command again resumes from the workdir's latest checkpoint.
"""

import os

# Parameter init's QR decompositions go to OpenBLAS, which stalls for seconds with
# several threads on a busy 2-core machine; XLA's own matmuls do not use it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from s2s_jax import config_utils, runtime  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a get_config() file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, tokenizers, config and metrics.")
flags.DEFINE_bool(
    "multihost", False,
    "Call jax.distributed.initialize() (one process per host; also done automatically when "
    "JAX_COORDINATOR_ADDRESS, a multi-task Slurm/Open MPI launch or a multi-host TPU slice is detected).",
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runtime.setup()
    from s2s_jax import parallel, train_cli

    parallel.maybe_initialize_distributed(FLAGS.multihost)  # before anything touches a device

    return train_cli.run(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main, flags_parser=config_utils.parse_flags)
