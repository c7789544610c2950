"""Fetch the real corpora the configs train on, from their canonical sources, into a data dir.

    python download.py multi30k --data_dir data        # or: s2s-download multi30k ...
    python download.py fra-eng cmn-eng --data_dir data
    python download.py iwslt16-de-en --data_dir data     # TED talks: the fine-tuning recipe's data
    python download.py multi30k --mirror http://my.mirror/files/   # same file names, another host

Files land where the configs' layout expects them (DATA_DIR/multi30k/train.de,
DATA_DIR/fra-eng/fra.txt, DATA_DIR/cmn-eng/cmn.txt), are unpacked (gzip, zip) and,
where a checksum is known, verified. A file already there is kept (nothing is
fetched twice). Without network the error names every URL that failed and the
files to place by hand. The configs read their files relative to data.dir, which
is "data" (this command's default --data_dir); the printed train command adds
--config.data.dir=DATA_DIR when the files went elsewhere.

Sources: Multi30k Task 1 raw files from github.com/multi30k/dataset (snapshot
a3d2e0d); Tatoeba English-French as the d2l.ai book downloads it (fra-eng.zip);
Tatoeba English-Chinese cmn.txt (github.com/qi-dian-b/seq2seq2_machine-translation,
721784588); IWSLT 2016 TED German-English dev/test sets (github.com/maroxtn/IWSLT-BACKUP,
73a0932; there is no training set). The Tatoeba files are the full upstream exports; the copies in
../shared/data are those minus a held-out slice, so scores on them are not comparable.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from s2s_jax.files import file_digest

_MULTI30K = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
_IWSLT = "https://raw.githubusercontent.com/maroxtn/IWSLT-BACKUP/73a09324ed3cb15d60f489b322ea9df4b431ea43/iwslt/de-en"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One usable file: where it comes from and where it goes under the data dir."""

    urls: tuple[str, ...]  # tried in order (mirrors)
    path: str  # relative to the data dir
    unpack: str = ""  # "" (as is), "gz", or "zip:MEMBER"
    checksum: str = ""  # "sha256:HEX" of the usable (unpacked) file, "sha1:HEX" of the download; "" = unchecked

    def how(self) -> str:
        if self.unpack == "gz":
            return f"gunzip of {self.urls[0]}"
        if self.unpack.startswith("zip:"):
            return f"{self.unpack[4:]} from {self.urls[0]}"
        return self.urls[0]


@dataclasses.dataclass(frozen=True)
class CorpusSource:
    files: tuple[RemoteFile, ...]
    flags: tuple[tuple[str, str], ...]  # (--config key, file path relative to the data dir = the config's value)
    config: str  # the built-in config (`--config NAME`) that trains on it
    extra: str = ""  # flags the printed train command adds


# sha256 of the gunzipped Multi30k files (what the configs read).
_MULTI30K_SHA256 = {
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
    "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    # French and Czech (four-way parallel: the multilingual recipes), and test2017 (no Czech)
    "train.fr": "5925a3c18f1587b6b54b87743106e6e8ab93618edb6f65d19eac0621f853a10d",
    "train.cs": "2be68b38c8d586ff4f54eb13cc6e1baaaa053695b3f070d3038303a47f2268da",
    "val.fr": "5304e444d842e962b2dda4d816b70b22a1765b15401642b7ca37a67477e708dc",
    "val.cs": "d53827e469b0a1ca8d57e9e26b2b64c4bc4b33f5479c7b03ae87ae5c882c3e33",
    "test_2016_flickr.fr": "cb3160d69b002bb638e66cc7612fcd56cb0af82eadc9c142dedc438afb885ef6",
    "test_2016_flickr.cs": "45adb85f688de8407fddcbe1b36dca15d12aab868149b337e2576f2d6d2ff8d8",
    "test_2017_flickr.de": "c3078bc3b36808bf9d20eb2347ed6137016179ef59ec0d2b9b8ecc3fb2880081",
    "test_2017_flickr.en": "ce1450ddc5ab0834502579d77a170849952e15a2938b34cc503bdc25ebb4fb98",
    "test_2017_flickr.fr": "6f3764e31dac41e9455e612958bcfd4e877c5e15cd66df2c2b2be6d9bd83e5b6",
}

# sha256 of the IWSLT 2016 TED German-English sets the fine-tuning recipe reads (there is no training set:
# it fine-tunes on tst2010-2012, validates on dev2010 and tests on tst2013).
_IWSLT_SHA256 = {
    "TED.dev2010.de-en.de": "9f2c2a4487cd329d22cb440f303920e1d368cf04c4c6e974b56149548991f6ea",
    "TED.dev2010.de-en.en": "56989441a1a503e0718a592b31a152b944bfd707d1ee1f9305de8caf88ce9e60",
    "TED.tst2010.de-en.de": "3ed4c594f00ec3052b58325218142db800e671cc5d14331254e41ebfe42d56d8",
    "TED.tst2010.de-en.en": "f60a0923afe861dff8be62986c4a239bfd09eee3183ad9d17af1b6d363d0ddae",
    "TED.tst2011.de-en.de": "605877ad3a8c612344f6544c77a2cbcae0ab8f73dc9dca9c041a04e2703e2bab",
    "TED.tst2011.de-en.en": "84e1e460256adfd142e9c7faf9c036d98ead475218b59784069ec3790ea16444",
    "TED.tst2012.de-en.de": "9f81bb3ca9e15c40c3af665d582b0aaf8a447d01d54cb02db2eda06a5b4d1ad6",
    "TED.tst2012.de-en.en": "1e5b82072b5947a188c669a18ee7d15cac38a75e5c2d2d9ac75efe3e911cc4b3",
    "TED.tst2013.de-en.de": "60fa902b0bf558ff58cf38de1dc6941de706e9f58e33e92119eb64696df4bbcc",
    "TED.tst2013.de-en.en": "9fc2d5df75a05754427a5dcea1b3cc2456e8613c878527e56713978a13bf672e",
}


def _iwslt(*sets: str, side: str) -> str:
    return ",".join(f"iwslt16-de-en-devtest/IWSLT16.TED.{name}.de-en.{side}" for name in sets)


CORPORA: dict[str, CorpusSource] = {
    "multi30k": CorpusSource(
        files=tuple(
            RemoteFile((f"{_MULTI30K}/{name}.gz",), f"multi30k/{name}", "gz", f"sha256:{digest}")
            for name, digest in _MULTI30K_SHA256.items()
        ),
        flags=(
            ("data.train_src", "multi30k/train.de"),
            ("data.train_tgt", "multi30k/train.en"),
            ("data.valid_src", "multi30k/val.de"),
            ("data.valid_tgt", "multi30k/val.en"),
            ("data.test_src", "multi30k/test_2016_flickr.de"),
            ("data.test_tgt", "multi30k/test_2016_flickr.en"),
        ),
        config="multi30k",
    ),
    "fra-eng": CorpusSource(
        files=(
            RemoteFile(
                (
                    "https://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip",
                    "https://raw.githubusercontent.com/modelexlab/data/adddaf33ac35572bcfeb421efec29435e7ea9332/fra-eng.zip",
                ),
                "fra-eng/fra.txt",
                "zip:fra-eng/fra.txt",
                "sha1:94646ad1522d915e7b0f9296181140edcf86a4f5",
            ),
        ),
        flags=(("data.train_tsv", "fra-eng/fra.txt"),),
        config="fra_eng",
    ),
    "cmn-eng": CorpusSource(
        files=(
            RemoteFile(
                (
                    "https://raw.githubusercontent.com/qi-dian-b/seq2seq2_machine-translation/"
                    "721784588a35e3e6fb78878a9b5baffdc387c49a/cmn.txt",
                ),
                "cmn-eng/cmn.txt",
            ),
        ),
        flags=(("data.train_tsv", "cmn-eng/cmn.txt"),),
        config="cmn_eng",
    ),
    "iwslt16-de-en": CorpusSource(
        files=tuple(
            RemoteFile((f"{_IWSLT}/IWSLT16.{name}",), f"iwslt16-de-en-devtest/IWSLT16.{name}", "", f"sha256:{digest}")
            for name, digest in _IWSLT_SHA256.items()
        ),
        flags=(
            ("data.train_src", _iwslt("tst2010", "tst2011", "tst2012", side="de")),
            ("data.train_tgt", _iwslt("tst2010", "tst2011", "tst2012", side="en")),
            ("data.valid_src", _iwslt("dev2010", side="de")),
            ("data.valid_tgt", _iwslt("dev2010", side="en")),
            ("data.test_src", _iwslt("tst2013", side="de")),
            ("data.test_tgt", _iwslt("tst2013", side="en")),
        ),
        config="ted_finetune",
        extra="--config.train.init_from=runs/multi30k_attention",
    ),
}


class DownloadError(RuntimeError):
    """A corpus could not be fetched; the message says which files to place where."""


def _check(path: str, checksum: str, what: str) -> None:
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DownloadError(f"{what}: {algorithm} {actual}, expected {expected} (a different or damaged file)")


def _fetch(url: str, target: str, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "s2s-jax-download"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _unpack(spec: RemoteFile, downloaded: str, target: str) -> None:
    if spec.unpack == "gz":
        with gzip.open(downloaded, "rb") as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    elif spec.unpack.startswith("zip:"):
        with zipfile.ZipFile(downloaded) as archive, archive.open(spec.unpack[4:]) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    else:
        shutil.copyfile(downloaded, target)


def _urls(spec: RemoteFile, mirror: str | None) -> tuple[str, ...]:
    if mirror:
        return (f"{mirror.rstrip('/')}/{spec.urls[0].rsplit('/', 1)[1]}",)
    return spec.urls


def _usable(spec: RemoteFile, path: str, verify: bool) -> bool:
    """Already downloaded: present and, when its checksum is of the usable file, matching."""
    if not os.path.isfile(path):
        return False
    if verify and spec.checksum.startswith("sha256:"):
        try:
            _check(path, spec.checksum, path)
        except DownloadError:
            return False
    return True


def fetch_files(
    files, data_dir: str, mirror: str | None = None, timeout: float = 60.0, verify: bool = True, log=print
) -> list[str]:
    """Downloads (and unpacks) every file not already in `data_dir`; returns their paths.

    Each file is written to a temporary name and renamed when complete and verified,
    so an interrupted or failed download never leaves a file that looks finished.
    """
    paths, failures = [], []
    for spec in files:
        path = os.path.join(data_dir, spec.path)
        paths.append(path)
        if _usable(spec, path, verify):
            log(f"{path}: already there")
            continue
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        errors, done = [], False
        for url in _urls(spec, mirror):
            with tempfile.TemporaryDirectory(dir=os.path.dirname(path) or ".", prefix=".download-") as tmp:
                downloaded, unpacked = os.path.join(tmp, "download"), os.path.join(tmp, "file")
                try:
                    log(f"{path}: fetching {url}")
                    _fetch(url, downloaded, timeout)
                    if verify and spec.checksum.startswith("sha1:"):
                        _check(downloaded, spec.checksum, url)
                    _unpack(spec, downloaded, unpacked)
                    if verify and spec.checksum.startswith("sha256:"):
                        _check(unpacked, spec.checksum, f"{path} (from {url})")
                except (OSError, urllib.error.URLError, DownloadError, zipfile.BadZipFile, KeyError, EOFError) as err:
                    reason = getattr(err, "reason", None) or err
                    errors.append(f"{url}: {reason}")
                    continue
                os.replace(unpacked, path)
                done = True
                break
        if not done:
            failures.append((spec, path, errors))
    if failures:
        tried = "\n".join(f"  {line}" for _, _, errors in failures for line in errors)
        place = "\n".join(f"  {path}  <-  {spec.how()}" for spec, path, _ in failures)
        raise DownloadError(
            f"could not download {len(failures)} file(s) (offline, or the source moved):\n{tried}\n"
            f"Place them by hand (e.g. fetched on a machine with internet) and run again:\n{place}"
        )
    return paths


def download(
    name: str, data_dir: str = "data", mirror: str | None = None, timeout: float = 60.0, verify: bool = True, log=print
) -> dict[str, str]:
    """Fetches corpus `name` (a key of CORPORA) into `data_dir`; returns {config key: absolute path}.

    Absolute, so `config_flags(paths)` overrides work whatever data.dir is.
    """
    if name not in CORPORA:
        raise DownloadError(f"unknown corpus {name!r}; known: {', '.join(CORPORA)}")
    source = CORPORA[name]
    fetch_files(source.files, data_dir, mirror, timeout, verify, log)
    return {
        key: ",".join(os.path.abspath(os.path.join(data_dir, r)) for r in rel.split(",")) for key, rel in source.flags
    }


DEFAULT_DATA_DIR = "data"  # the configs' data.dir and this command's --data_dir


def config_flags(paths: dict[str, str]) -> str:
    """Per-file --config.data.* overrides (absolute paths win over data.dir)."""
    return " ".join(f"--config.{key}={path}" for key, path in paths.items())


def train_command(name: str, data_dir: str = DEFAULT_DATA_DIR) -> str:
    """The train.py command for corpus `name` downloaded into `data_dir`."""
    config = CORPORA[name].config
    command = f"python train.py --config {config} --workdir runs/{config}"
    if os.path.normpath(data_dir) != DEFAULT_DATA_DIR:
        command += f" --config.data.dir={data_dir}"
    return f"{command} {CORPORA[name].extra}".rstrip()
