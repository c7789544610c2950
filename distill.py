"""Distill a teacher (or an ensemble) into a student (the same command as `s2s-distill` after `pip install .`).

    python distill.py --teacher runs/m30k_tuned_s0 --teacher runs/m30k_tuned_s1 \\
        --config configs/multi30k_student.py --workdir runs/m30k_student

Running the same command again resumes an interrupted distillation or training. The flags
live in s2s_jax/cli/distill.py.
"""

from s2s_jax.cli import distill  # sets OPENBLAS_NUM_THREADS before numpy/jax load

if __name__ == "__main__":
    distill.main()
