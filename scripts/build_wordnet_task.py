"""Convert the WordNet 3.0 database once into the compact file behind the embedded fine-tuning tasks.

Reads ``data.noun``, ``data.verb``, ``data.adj`` and ``data.adv`` (Debian package ``wordnet-base``,
``/usr/share/wordnet``) and writes, under ``nas/finetune/data/``:

* ``wordnet_glosses.tsv.gz``: one synset a line, ``id <TAB> pos <TAB> lexname <TAB> gloss``, sorted by
  id, where id is ``OFFSET-SS_TYPE`` (e.g. ``00001740-n``), pos the WordNet synset type (n, v, a, s, r),
  lexname the lexicographer file (the supersense, e.g. ``noun.artifact``) and gloss the synset's gloss
  exactly as WordNet has it (definition, then ``; "usage examples"``). The synset's own words are left
  out. The gzip stream is deterministic (mtime 0, no file name), so a rebuild gives identical bytes.
* ``WORDNET-LICENSE.txt``: the WordNet 3.0 license, copied verbatim from the package's copyright file.

Usage::

    python scripts/build_wordnet_task.py [--wordnet-dir /usr/share/wordnet] [--out nas/finetune/data]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import sys
from pathlib import Path

# The 45 lexicographer files of WordNet 3.0, by number (WordNet's ``lexnames`` file).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
SS_TYPES = frozenset("nvasr")
COPYRIGHT_FILE = Path("/usr/share/doc/wordnet-base/copyright")
LICENSE_NAME = "WordNet3.0"
REPO_DATA_DIR = Path(__file__).resolve().parent.parent / "nas" / "finetune" / "data"


def parse_synset(line: str, source: str) -> tuple[str, str, str, str]:
    """``(id, ss_type, lexname, gloss)`` of one data-file line; ValueError names the file and offset."""
    head, bar, gloss = line.partition(" | ")
    fields = head.split()
    if not bar or len(fields) < 3:
        raise ValueError(f"{source}: not a synset line: {line[:60]!r}")
    offset, lex_filenum, ss_type = fields[:3]
    if ss_type not in SS_TYPES or not lex_filenum.isdigit() or int(lex_filenum) >= len(LEXNAMES):
        raise ValueError(f"{source}: synset {offset}: bad type {ss_type!r} or lexicographer file {lex_filenum!r}")
    gloss = gloss.strip()
    if not gloss or "\t" in gloss or "\n" in gloss:
        raise ValueError(f"{source}: synset {offset}: empty gloss or one holding a tab")
    return f"{offset}-{ss_type}", ss_type, LEXNAMES[int(lex_filenum)], gloss


def read_synsets(wordnet_dir: Path) -> list[tuple[str, str, str, str]]:
    """All synsets of the four data files, sorted by id."""
    rows = []
    for name in DATA_FILES:
        path = wordnet_dir / name
        with path.open(encoding="utf-8") as handle:
            # Lines starting with two spaces are the license header of each data file.
            rows.extend(parse_synset(line, str(path)) for line in handle if not line.startswith("  "))
    rows.sort()
    ids = [row[0] for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{wordnet_dir}: duplicate synset ids")
    return rows


def gzip_tsv(rows: list[tuple[str, str, str, str]]) -> bytes:
    """The rows as a tab-separated table with a header, in a byte-for-byte reproducible gzip stream."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", quoting=csv.QUOTE_NONE, quotechar=None, lineterminator="\n")
    writer.writerow(("id", "pos", "lexname", "gloss"))
    writer.writerows(rows)
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as stream:
        stream.write(text.getvalue().encode("utf-8"))
    return raw.getvalue()


def license_text(copyright_file: Path) -> str:
    """The WordNet 3.0 license paragraph of a Debian copyright file, de-indented, wording untouched."""
    lines = copyright_file.read_text(encoding="utf-8").splitlines()
    try:
        start = lines.index(f"License: {LICENSE_NAME}") + 1
    except ValueError:
        raise ValueError(f"{copyright_file}: no 'License: {LICENSE_NAME}' paragraph") from None
    body = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        # Debian's format indents each line by one space and writes a blank line as " .".
        body.append("" if line == " ." else line[1:])
    header = "WordNet 3.0 license (from the Debian package wordnet-base, file debian/copyright)\n\n"
    return header + "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--copyright", type=Path, default=COPYRIGHT_FILE)
    parser.add_argument("--out", type=Path, default=REPO_DATA_DIR)
    args = parser.parse_args(argv)
    rows = read_synsets(args.wordnet_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "wordnet_glosses.tsv.gz"
    table.write_bytes(gzip_tsv(rows))
    (args.out / "WORDNET-LICENSE.txt").write_text(license_text(args.copyright), encoding="utf-8")
    print(f"{table}: {len(rows)} synsets, {table.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
