"""``fairseq-admin-corpus``: turn the downloaded IWSLT'14 / WMT'14 archives into plain ``NAME.LANG`` files.

The recipes download and unpack the same archives as fairseq's ``examples/translation/prepare-*.sh``;
this step does those scripts' cleaning, so ``fairseq-admin-prepare`` can take it from there
(joint sentencepiece instead of Moses + BPE):

* IWSLT'14 De-En: TED transcripts without their XML markup; valid = every 23rd training pair;
  test = dev2010 + dev2012 + tst2010-2012; lowercased; pairs of 1-175 words with length ratio <= 1.5.
* WMT'14 En-De / En-Fr: the WMT'14 parallel corpora concatenated; valid = every 100th training pair;
  test = newstest2014; pairs of 1-250 words with length ratio <= 1.5.

Output files are written under temporary names and renamed when complete, so re-running skips a
finished corpus and an interrupted one is redone.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import sys
from contextlib import ExitStack
from collections.abc import Iterable, Iterator

from fairseq_admin.errors import AdminError

SEGMENT = re.compile(r'^\s*<seg id="?\d+"?>\s*(.*?)\s*</seg>\s*$')
IWSLT_DROP = ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator", "<doc", "</doc>")
IWSLT_STRIP = re.compile(r"</?(title|description)>")

WMT14 = {
    "wmt14_en_de": {
        "pair": "de-en",
        "train": ["training/europarl-v7.de-en", "commoncrawl.de-en", "training/news-commentary-v9.de-en"],
        "test": "test-full/newstest2014-deen-{side}.{lang}.sgm",
    },
    "wmt14_en_fr": {
        "pair": "fr-en",
        "train": ["training/europarl-v7.fr-en", "commoncrawl.fr-en", "un/undoc.2000.fr-en",
                  "training/news-commentary-v9.fr-en", "giga-fren.release2.fixed"],
        "test": "test-full/newstest2014-fren-{side}.{lang}.sgm",
    },
}


def _open(path: str):
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            if candidate.endswith(".gz"):
                return gzip.open(candidate, "rt", encoding="utf-8", errors="replace")
            return open(candidate, encoding="utf-8", errors="replace")
    raise AdminError(f"{path} not found: did the download and extraction finish? (re-run the prepare stage)")


def keep_pair(src: str, tgt: str, max_words: int, ratio: float = 1.5) -> bool:
    """clean-corpus-n.perl's rule: both sides 1..max_words words, length ratio at most ``ratio``."""
    ns, nt = len(src.split()), len(tgt.split())
    return 0 < ns <= max_words and 0 < nt <= max_words and ns <= ratio * nt and nt <= ratio * ns


def segments(path: str) -> list[str]:
    """The ``<seg>`` texts of an IWSLT xml or WMT sgm file."""
    with _open(path) as f:
        return [m.group(1).replace("\u2019", "'") for m in map(SEGMENT.match, f) if m]


class PairWriter:
    """Writes NAME.SRC / NAME.TGT pairs into temporary files, renamed by :meth:`commit`."""

    def __init__(self, stack: ExitStack, dest: str, name: str, src: str, tgt: str) -> None:
        self.final = [os.path.join(dest, f"{name}.{lang}") for lang in (src, tgt)]
        self.files = [stack.enter_context(open(p + ".tmp", "w", encoding="utf-8")) for p in self.final]  # noqa: SIM115
        self.count = 0

    def write(self, src: str, tgt: str) -> None:
        self.files[0].write(src + "\n")
        self.files[1].write(tgt + "\n")
        self.count += 1

    def commit(self) -> None:
        for f, path in zip(self.files, self.final, strict=True):
            f.close()
            os.replace(f.name, path)


def _write_corpus(dest: str, src: str, tgt: str, train: Iterable[tuple[str, str]], valid_every: int,
                  test: list[tuple[str, str]], max_words: int, lowercase: bool) -> None:
    os.makedirs(dest, exist_ok=True)
    with ExitStack() as stack:
        writers = {name: PairWriter(stack, dest, name, src, tgt) for name in ("train", "valid", "test")}
        kept = 0
        for s, t in train:
            s, t = s.strip(), t.strip()
            if lowercase:
                s, t = s.lower(), t.lower()
            if not keep_pair(s, t, max_words):
                continue
            kept += 1
            writers["valid" if kept % valid_every == 0 else "train"].write(s, t)
        for s, t in test:
            writers["test"].write(s.lower() if lowercase else s, t.lower() if lowercase else t)
        # test last: its presence marks the whole corpus as complete
        for name in ("train", "valid", "test"):
            writers[name].commit()
            print(f"fairseq-admin-corpus: {name}: {writers[name].count} pairs -> {dest}/{name}.{{{src},{tgt}}}")


def _zip_lines(src_path: str, tgt_path: str) -> Iterator[tuple[str, str]]:
    with _open(src_path) as fs, _open(tgt_path) as ft:
        yield from zip(fs, ft, strict=True)


def iwslt14(downloads: str, dest: str) -> None:
    base = os.path.join(downloads, "de-en")

    def train() -> Iterator[tuple[str, str]]:
        for s, t in _zip_lines(os.path.join(base, "train.tags.de-en.de"), os.path.join(base, "train.tags.de-en.en")):
            if s.lstrip().startswith(IWSLT_DROP) or t.lstrip().startswith(IWSLT_DROP):
                continue
            yield IWSLT_STRIP.sub("", s), IWSLT_STRIP.sub("", t)

    test: list[tuple[str, str]] = []
    for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
        de = segments(os.path.join(base, f"IWSLT14.{name}.de-en.de.xml"))
        en = segments(os.path.join(base, f"IWSLT14.{name}.de-en.en.xml"))
        if len(de) != len(en):
            raise AdminError(f"IWSLT14.{name}: {len(de)} German but {len(en)} English segments")
        test += zip(de, en, strict=True)
    _write_corpus(dest, "de", "en", train(), 23, test, max_words=175, lowercase=True)


def wmt14(task: str, downloads: str, dest: str) -> None:
    spec = WMT14[task]
    src, tgt = task.split("_")[1:]

    def train() -> Iterator[tuple[str, str]]:
        for stem in spec["train"]:
            yield from _zip_lines(os.path.join(downloads, f"{stem}.{src}"), os.path.join(downloads, f"{stem}.{tgt}"))

    sources = segments(os.path.join(downloads, spec["test"].format(side="src", lang=src)))
    references = segments(os.path.join(downloads, spec["test"].format(side="ref", lang=tgt)))
    if len(sources) != len(references):
        raise AdminError(f"newstest2014: {len(sources)} source but {len(references)} reference segments")
    test = list(zip(sources, references, strict=True))
    _write_corpus(dest, src, tgt, train(), 100, test, max_words=250, lowercase=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-corpus", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=["iwslt14_de_en", *WMT14])
    parser.add_argument("--downloads", required=True, help="directory the archives were unpacked into")
    parser.add_argument("--dest", required=True, help="where to write {train,valid,test}.LANG")
    args = parser.parse_args(argv)
    src, tgt = args.task.split("_")[1:]
    if all(os.path.exists(os.path.join(args.dest, f"test.{lang}")) for lang in (src, tgt)):
        print(f"fairseq-admin-corpus: {args.dest} is complete")
        return
    try:
        if args.task == "iwslt14_de_en":
            iwslt14(args.downloads, args.dest)
        else:
            wmt14(args.task, args.downloads, args.dest)
    except (AdminError, ValueError) as err:  # zip(strict=True) raises ValueError on unequal files
        sys.exit(f"fairseq-admin-corpus: error: {err}")


if __name__ == "__main__":
    main()
