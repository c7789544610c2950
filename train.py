"""Train an LSTM seq2seq translator (the same command as `s2s-train` after `pip install .`).

    python train.py --config quickstart --workdir runs/quickstart       # a built-in config by name
    python train.py --config configs/multi30k.py --workdir runs/m30k --config.train.num_steps=20000

Running the same command again resumes from the workdir's latest checkpoint. The
flags live in s2s_jax/cli/train.py, whose main() runs absl's app.run with
flags_parser=config_flags.parse_flags (flag mistakes: one line, exit status 1).
"""

from s2s_jax.cli import train  # sets OPENBLAS_NUM_THREADS before numpy/jax load

if __name__ == "__main__":
    train.main()
