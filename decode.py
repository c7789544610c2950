"""Translate with a trained workdir.

    python decode.py --workdir runs/quickstart --input test.en --output test.hyp --beam_size 5
    echo "November 22, 2026" | python decode.py --workdir runs/quickstart
    python decode.py --workdir runs/m30k --input test.de --reference test.en   # + BLEU/chrF
    python decode.py --workdir runs/m30k --nbest 5 --beam_size 5               # index \\t score \\t text
    python decode.py --workdir runs/fra_eng --input d2l.en --reference d2l.fr --sentence_bleu 2

One output line per input line, in order (n-best: N lines per input). With a
terminal on stdin it translates interactively, line by line.
"""

import sys

import os

# Parameter init's QR decompositions go to OpenBLAS, which stalls for seconds with
# several threads on a busy 2-core machine; XLA's own matmuls do not use it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from absl import app, flags  # noqa: E402

from s2s_jax import runtime  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "A training workdir.", required=True)
flags.DEFINE_string("checkpoint", "best", "best | latest | a step number.")
flags.DEFINE_string("input", "-", "Input file, one sentence a line; - for stdin.")
flags.DEFINE_string("output", "-", "Output file; - for stdout.")
flags.DEFINE_integer("beam_size", None, "Beam size (1 = greedy); default: the config's decode.beam_size.")
flags.DEFINE_float("alpha", None, "GNMT length penalty exponent; default: the config's decode.alpha.")
flags.DEFINE_integer("nbest", 1, "Hypotheses per input; > 1 writes 'index<TAB>score<TAB>text' lines.")
flags.DEFINE_bool("sample", False, "Sample instead of searching.")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature (> 0).")
flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens only (0 = off).")
flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1.0 = off).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_string("reference", None, "Reference file: print corpus BLEU and chrF (sacrebleu) to stderr.")
flags.DEFINE_string(
    "score_json", None, "With --reference: also write the scores (cased and lowercased BLEU, chrF, signatures) to this JSON file."
)
flags.DEFINE_integer(
    "sentence_bleu", 0, "With --reference: also print each line's d2l sentence BLEU with n-grams up to K (d2l uses 2)."
)
flags.DEFINE_string("plot_attention", None, "Directory: write one attention heatmap PNG per input line.")
flags.DEFINE_integer("batch_size", None, "Sentences per batch; default: the config's decode.batch_size.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runtime.setup()
    from s2s_jax import decode_cli

    return decode_cli.run(FLAGS)


if __name__ == "__main__":
    sys.exit(app.run(main))
