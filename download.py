"""Download the corpora the configs train on (Multi30k, Tatoeba fra-eng / cmn-eng).

    python download.py multi30k --data_dir data
    python download.py all --data_dir data --mirror http://my.mirror/files/

Prints the train.py command (with --config.data.* flags) for each corpus.
"""

import sys

from s2s_jax.download import main

if __name__ == "__main__":
    sys.exit(main())
