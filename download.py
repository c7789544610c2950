"""Download the corpora the configs train on (Multi30k, Tatoeba fra-eng / cmn-eng).

    python download.py multi30k --data_dir data
    python download.py all --data_dir data --mirror http://my.mirror/files/

Prints the train.py command for each corpus (with --config.data.dir=DATA_DIR when it is not data).
"""

import sys

from s2s_jax.cli.download import main

if __name__ == "__main__":
    sys.exit(main())
