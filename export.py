"""Export a trained workdir as a self-contained artefact (the same command as `s2s-export`).

    python export.py --workdir runs/m30k_att --output exported/m30k_att
    python exported/m30k_att/translate.py --input test.de --output test.hyp

The artefact needs only jax, numpy and sentencepiece; s2s_jax/decoding/export.py says what it holds.
"""

from s2s_jax.cli import export  # sets OPENBLAS_NUM_THREADS before numpy/jax load

if __name__ == "__main__":
    export.main()
