"""The `s2s-download` command (also `python download.py`): fetch the corpora the configs train on
(s2s_jax/data/download.py says from where) and print the train command for each."""

from __future__ import annotations

import argparse
import sys

from s2s_jax.data.download import CORPORA, DEFAULT_DATA_DIR, DownloadError, download, train_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="download.py",
        description="Download the corpora the configs train on.",
        epilog="Then train with the command it prints.",
    )
    parser.add_argument("corpora", nargs="+", choices=[*CORPORA, "all"], help="which corpora")
    parser.add_argument(
        "--data_dir", default=DEFAULT_DATA_DIR, help="where to put them (default: data, the configs' data.dir)"
    )
    parser.add_argument("--mirror", default=None, help="fetch every file as MIRROR/<its file name> instead")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per connection attempt")
    parser.add_argument("--no_verify", action="store_true", help="keep files whose checksum differs")
    args = parser.parse_args(argv)
    names = list(CORPORA) if "all" in args.corpora else list(dict.fromkeys(args.corpora))
    try:
        for name in names:
            download(name, args.data_dir, args.mirror, args.timeout, not args.no_verify)
            print(f"{name}: {train_command(name, args.data_dir)}")
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # the data directory cannot be made or written
        print(f"error: {err.filename or args.data_dir}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
