"""Prepare a config's training corpus once (the same command as `s2s-prepare` after `pip install .`).

    python prepare.py --config fra_eng --config.data.dir=/srv/corpora

train.py does the same on its first start when the corpus is not prepared yet; every
later run (any workdir) reuses it. The flags live in s2s_jax/cli/prepare.py.
"""

from s2s_jax.cli import prepare  # sets OPENBLAS_NUM_THREADS before numpy loads

if __name__ == "__main__":
    prepare.main()
