"""Build a run's vocabulary shortlist (the same command as `s2s-shortlist` after `pip install .`).

    python shortlist.py --workdir runs/m30k_tuned
    python decode.py --workdir runs/m30k_tuned --shortlist --input test.de

The flags live in s2s_jax/cli/shortlist.py; s2s_jax/decoding/shortlist.py says what it builds.
"""

from s2s_jax.cli import shortlist  # sets OPENBLAS_NUM_THREADS before numpy loads

if __name__ == "__main__":
    shortlist.main()
