"""Translate with a trained workdir (the same command as `s2s-decode` after `pip install .`).

    python decode.py --workdir runs/quickstart --input test.en --output test.hyp --beam_size 5
    echo "November 22, 2026" | python decode.py --workdir runs/quickstart
    python decode.py --workdir runs/m30k --input test.de --reference test.en   # + BLEU/chrF
    python decode.py --workdir runs/m30k --nbest 5 --beam_size 5               # index \\t score \\t text
    python decode.py --workdir runs/fra_eng --input d2l.en --reference d2l.fr --sentence_bleu 2

One output line per input line, in order (n-best: N lines per input). With a
terminal on stdin it translates interactively, line by line. The flags live in
s2s_jax/cli/decode.py.
"""

from s2s_jax.cli import decode  # sets OPENBLAS_NUM_THREADS before numpy/jax load

if __name__ == "__main__":
    decode.main()
