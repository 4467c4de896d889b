"""``fairseq-admin-corpus``: the paper's corpora from the downloaded IWSLT'14 / WMT'14 archives.

Two pipelines, chosen with ``--pipeline``:

* ``moses`` (the paper's; what Transformer-Clinic's ``pre-process/*.sh`` do, with sacremoses in place of
  the Moses perl scripts): Moses tokenization with XML escaping (``tokenizer.perl -l LANG``; ``-a``
  aggressive hyphen splitting for WMT), ``normalize-punctuation.perl`` + ``remove-non-printing-char.perl``
  before it on WMT training/validation text, ``clean-corpus-n.perl``'s rule on the Moses tokens, and
  lowercasing for IWSLT. The output is tokenized text, ready for joint BPE (``fairseq-admin-prepare
  --pipeline bpe``), plus the untokenized test sets (``test.raw.LANG``) that sacreBLEU scores against.
* ``raw`` (for joint sentencepiece): the same corpora and splits, untokenized; the same cleaning rule
  on whitespace words.

Per task (read from the original's scripts):

* IWSLT'14 De-En: ``train.tags.de-en.*`` without its ``<url>``/``<talkid>``/``<keywords>`` lines and
  ``<title>``/``<description>`` tags; clean 1-175 tokens, ratio 1.5; lowercase; valid = every 23rd kept
  pair; test = dev2010 + dev2012 + tst2010-2012.
* WMT'14 En-De: europarl-v7 + commoncrawl + news-commentary-v12; clean 1-80 tokens, ratio 9
  (clean-corpus-n's default: the script passes no ``-ratio``); valid = newstest2013; test = newstest2014.
* WMT'14 En-Fr: europarl-v7 + commoncrawl + undoc.2000 + news-commentary-v9 + giga-fren; valid = every
  1333rd pair; test = newstest2014. The original cleans (1-250 BPE tokens, ratio 1.5) only after BPE:
  ``moses`` leaves that to ``fairseq-admin-prepare --clean-after-bpe``; ``raw`` cleans whitespace words.

Everything streams: memory does not grow with the corpus (WMT'14 En-Fr has 36M pairs). ``--workers N``
tokenizes in N processes, in order. Output files appear under their names only when complete.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import Pool
from typing import IO

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.files import AtomicFile, open_text
from fairseq_admin_tools.progress import progress

Pair = tuple[str, str]

# IWSLT'14: the lines `grep -v` drops and the tags `sed` strips (iwslt14de-en.sh).
IWSLT_DROP = ("<url>", "<talkid>", "<keywords>")
IWSLT_STRIP = re.compile(r"<title>|</title>|<description>|</description>")
IWSLT_TEST = ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")
# `grep '<seg id' | sed -e 's/<seg id="[0-9]*">\s*//g' | sed -e 's/\s*<\/seg>\s*//g'`
SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*')
SEG_CLOSE = re.compile(r"\s*</seg>\s*")


@dataclass(frozen=True)
class CleanRule:
    """clean-corpus-n.perl's rule: both sides MIN..MAX words, neither more than RATIO times the other."""

    min_words: int
    max_words: int
    ratio: float


@dataclass(frozen=True)
class Task:
    src: str
    tgt: str
    train: tuple[str, ...]  # corpus stems under the downloads directory: STEM.LANG[.gz]
    test: str  # IWSLT: xml name stem; WMT: sgm path pattern
    lowercase: bool = False
    aggressive: bool = False  # tokenizer.perl -a
    normalize: bool = False  # normalize-punctuation.perl + remove-non-printing-char.perl on train and valid
    clean: CleanRule | None = None  # before any split, on Moses tokens (moses) / whitespace words (raw)
    clean_after_split: CleanRule | None = None  # raw pipeline only (moses cleans after BPE, in prepare)
    valid_every: int | None = None  # valid = every Nth pair (awk NR%N == 0), after cleaning
    valid: str | None = None  # WMT'14 En-De: newstest2013 from dev.tgz


TASKS = {
    "iwslt14_de_en": Task(
        "de", "en", ("de-en/train.tags.de-en",), "de-en/IWSLT14.{name}.de-en.{lang}.xml", lowercase=True,
        clean=CleanRule(1, 175, 1.5), valid_every=23),
    "wmt14_en_de": Task(
        "en", "de", ("training/europarl-v7.de-en", "commoncrawl.de-en", "training/news-commentary-v12.de-en"),
        "test-full/newstest2014-deen-{side}.{lang}.sgm", aggressive=True, normalize=True,
        clean=CleanRule(1, 80, 9.0), valid="dev/newstest2013"),
    "wmt14_en_fr": Task(
        "en", "fr", ("training/europarl-v7.fr-en", "commoncrawl.fr-en", "un/undoc.2000.fr-en",
                     "training/news-commentary-v9.fr-en", "giga-fren.release2.fixed"),
        "test-full/newstest2014-fren-{side}.{lang}.sgm", aggressive=True, normalize=True,
        clean_after_split=CleanRule(1, 250, 1.5), valid_every=1333),
}


# --- reading ------------------------------------------------------------------------------------------

def open_corpus_file(path: str) -> IO[str]:
    """``path`` or ``path.gz`` as UTF-8 text split on ``\\n`` only, as perl and awk read it."""
    for candidate in (path, path + ".gz"):
        if os.path.exists(candidate):
            return open_text(candidate, errors="replace", newline="\n")
    raise AdminError(f"{path} not found: did the download and extraction finish? (re-run the prepare stage)")


def lines(path: str) -> Iterator[str]:
    """The lines of a file without their ``\\n`` (perl's chomp)."""
    with open_corpus_file(path) as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def zip_sides(src: Iterable[str], tgt: Iterable[str], what: str) -> Iterator[Pair]:
    """Pairs of two line streams; unequal lengths are an error (clean-corpus-n dies on them too)."""
    try:
        yield from zip(src, tgt, strict=True)
    except ValueError as err:
        raise AdminError(f"{what}: the two languages have different numbers of lines ({err})") from None


def iwslt_train_side(path: str) -> Iterator[str]:
    for line in lines(path):
        if not any(tag in line for tag in IWSLT_DROP):
            yield IWSLT_STRIP.sub("", line)


def segments(path: str) -> list[str]:
    """The ``<seg id=...>`` texts of an IWSLT xml or WMT sgm file, as the original's grep + sed."""
    return [SEG_CLOSE.sub("", SEG_OPEN.sub("", line)) for line in lines(path) if "<seg id" in line]


# --- the Moses steps ----------------------------------------------------------------------------------

def perl_tokenizer(lang: str):
    """sacremoses' MosesTokenizer with tokenizer.perl's rule since 2018 (commit 9fc964da7, so in the
    original's 2020 clone): the last word's final dot is split off even after a nonbreaking prefix
    ("C U B S." -> "C U B S .")."""
    from sacremoses import MosesTokenizer

    class PerlMosesTokenizer(MosesTokenizer):
        def handles_nonbreaking_prefixes(self, text: str) -> str:
            tokens = text.split()
            if tokens and (last := re.fullmatch(r"(\S+)\.", tokens[-1])):
                tokens[-1] = last.group(1) + " ."
            return super().handles_nonbreaking_prefixes(" ".join(tokens))

    return PerlMosesTokenizer(lang)


class MosesSteps:
    """sacremoses stand-ins for the perl scripts, per language."""

    def __init__(self, lang: str, aggressive: bool) -> None:
        import regex
        from sacremoses import MosesPunctNormalizer

        self.aggressive = aggressive
        self.tokenizer = perl_tokenizer(lang)
        # perl_parity: the perl script's own replacements (’ -> ", French quotes); penn=True is the
        # script's default mode (its -penn flag off), which sacremoses names the other way round.
        self.normalizer = MosesPunctNormalizer(lang, penn=True, perl_parity=True)
        self.other = regex.compile(r"\p{C}")

    def normalize(self, line: str) -> str:
        """normalize-punctuation.perl LANG | remove-non-printing-char.perl."""
        # perl keeps the line's "\n" while normalizing; one rule ((\.+)"(\s*[^<])) sees it as a next character.
        return self.other.sub(" ", self.normalizer.normalize(line + "\n"))

    def tokenize(self, line: str) -> str:
        """tokenizer.perl [-a] -l LANG (XML escaping on); lines of only whitespace pass through."""
        if not line.strip():
            return line
        return self.tokenizer.tokenize(line, aggressive_dash_splits=self.aggressive, return_str=True, escape=True)


_STEPS: dict[str, MosesSteps] = {}


def _steps(lang: str, aggressive: bool) -> MosesSteps:
    key = f"{lang}:{aggressive}"
    if key not in _STEPS:
        _STEPS[key] = MosesSteps(lang, aggressive)
    return _STEPS[key]


@dataclass(frozen=True)
class PairProcessor:
    """What happens to each pair of one split (picklable, so worker processes can run it)."""

    src: str
    tgt: str
    tokenize: bool
    aggressive: bool = False
    normalize: bool = False
    quote_fix: bool = False  # test sets: sed "s/\’/\'/g" before tokenizing

    def side(self, line: str, lang: str) -> str:
        if self.quote_fix:
            line = line.replace("\u2019", "'")
        if not self.tokenize:
            return line
        steps = _steps(lang, self.aggressive)
        if self.normalize:
            line = steps.normalize(line)
        return steps.tokenize(line)

    def __call__(self, batch: list[Pair]) -> list[Pair]:
        return [(self.side(s, self.src), self.side(t, self.tgt)) for s, t in batch]


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last one shorter); itertools.batched needs Python 3.12."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def ordered_map(function: Callable[[list], list], items: Iterable, workers: int, batch_size: int = 2000) -> Iterator:
    """``function`` over batches of ``items`` in ``workers`` processes, results in input order.

    At most ``4 * workers`` batches are in flight, so memory stays bounded however long ``items`` is
    (``Pool.imap`` alone would read its whole input ahead).
    """
    batches = batched(items, batch_size)
    if workers <= 1:
        for batch in batches:
            yield from function(batch)
        return
    with Pool(workers) as pool:
        while window := list(itertools.islice(batches, 4 * workers)):
            for result in pool.imap(function, window):
                yield from result


class Cleaner:
    """clean-corpus-n.perl, one pair at a time: the pair as the script writes it, or None if it drops it."""

    TOO_LONG = re.compile(r"[^\s|]{1001}")  # -max-word-length 1000

    def __init__(self, rule: CleanRule) -> None:
        self.rule = rule
        self.factored: bool | None = None  # the script decides from the first pair whether `|` separates factors

    def _normalize(self, line: str) -> str:
        if not self.factored:
            line = line.replace("|", "")
        return re.sub(r"\s+", " ", line).strip(" ")

    def clean(self, src: str, tgt: str) -> Pair | None:
        if self.factored is None:
            self.factored = "|" in src or "|" in tgt
        src, tgt = self._normalize(src), self._normalize(tgt)
        if not src or not tgt:
            return None
        ns, nt = len(src.split(" ")), len(tgt.split(" "))
        rule = self.rule
        if not (rule.min_words <= ns <= rule.max_words and rule.min_words <= nt <= rule.max_words):
            return None
        if ns / nt > rule.ratio or nt / ns > rule.ratio:
            return None
        if self.TOO_LONG.search(src) or self.TOO_LONG.search(tgt):
            return None
        return src, tgt

    def __call__(self, pairs: Iterable[Pair]) -> Iterator[Pair]:
        for src, tgt in pairs:
            kept = self.clean(src, tgt)
            if kept is not None:
                yield kept


# --- writing ------------------------------------------------------------------------------------------

class PairWriter:
    """Writes NAME.SRC / NAME.TGT under temporary names, renamed by :meth:`commit` (discarded if never)."""

    def __init__(self, stack: ExitStack, dest: str, name: str, src: str, tgt: str) -> None:
        self.final = [os.path.join(dest, f"{name}.{lang}") for lang in (src, tgt)]
        self.files = [AtomicFile(path) for path in self.final]
        self.committed = False
        stack.callback(self._discard_unless_committed)
        self.name = name
        self.count = 0

    def write(self, src: str, tgt: str) -> None:
        self.files[0].file.write(src + "\n")
        self.files[1].file.write(tgt + "\n")
        self.count += 1

    def commit(self) -> None:
        for f in self.files:
            f.commit()
        self.committed = True
        print(f"fairseq-admin-corpus: {self.name}: {self.count} pairs -> {self.final[0]}, {self.final[1]}", flush=True)


    def _discard_unless_committed(self) -> None:
        if not self.committed:
            for f in self.files:
                f.discard()


# --- the tasks ----------------------------------------------------------------------------------------

def train_pairs(task: Task, downloads: str) -> Iterator[Pair]:
    """The training corpora, concatenated, before any processing."""
    for stem in task.train:
        base = os.path.join(downloads, stem)
        if task.lowercase:  # IWSLT: TED transcripts with metadata lines
            src, tgt = iwslt_train_side(f"{base}.{task.src}"), iwslt_train_side(f"{base}.{task.tgt}")
        else:
            src, tgt = lines(f"{base}.{task.src}"), lines(f"{base}.{task.tgt}")
        yield from zip_sides(src, tgt, stem)


def test_pairs(task: Task, downloads: str) -> list[Pair]:
    """The test set's segments, untokenized (IWSLT: its five dev/test sets concatenated)."""
    if task.lowercase:
        names = [{"src": task.test.format(name=n, lang=task.src), "tgt": task.test.format(name=n, lang=task.tgt)}
                 for n in IWSLT_TEST]
    else:
        names = [{"src": task.test.format(side="src", lang=task.src),
                  "tgt": task.test.format(side="ref", lang=task.tgt)}]
    pairs: list[Pair] = []
    for name in names:
        src, tgt = (segments(os.path.join(downloads, name[side])) for side in ("src", "tgt"))
        if len(src) != len(tgt):
            raise AdminError(f"{name['src']} has {len(src)} segments but {name['tgt']} has {len(tgt)}")
        pairs += zip(src, tgt, strict=True)
    return pairs


def write_train_and_valid(task: Task, downloads: str, moses: bool, workers: int,
                          writers: dict[str, PairWriter]) -> None:
    """The training corpora, processed, into train (and valid, where the task carves it out of train)."""
    train = PairProcessor(task.src, task.tgt, moses, task.aggressive, task.normalize)
    processed = ordered_map(train, train_pairs(task, downloads), workers)
    if task.clean:
        processed = Cleaner(task.clean)(processed)
    # raw En-Fr: the original cleans train and valid each on its own, after the split (and after BPE)
    late = {split: Cleaner(task.clean_after_split) for split in ("train", "valid")} \
        if task.clean_after_split and not moses else {}
    shown = progress(processed, f"corpus {task.src}-{task.tgt}: train pairs", unit="pairs")
    for number, (src, tgt) in enumerate(shown, start=1):
        if task.lowercase:
            src, tgt = src.lower(), tgt.lower()
        split = "valid" if task.valid_every and number % task.valid_every == 0 else "train"
        kept = late[split].clean(src, tgt) if late else (src, tgt)
        if kept is not None:
            writers[split].write(*kept)
    if task.valid:
        base = os.path.join(downloads, task.valid)
        pairs = zip_sides(lines(f"{base}.{task.src}"), lines(f"{base}.{task.tgt}"), task.valid)
        for src, tgt in ordered_map(train, pairs, workers):
            writers["valid"].write(src, tgt)


def build(task_name: str, downloads: str, dest: str, pipeline: str, workers: int = 1) -> None:
    """Write train/valid/test.{src,tgt} (and test.raw.{src,tgt}) for one task into ``dest``."""
    task = TASKS[task_name]
    moses = pipeline == "moses"
    os.makedirs(dest, exist_ok=True)
    test = test_pairs(task, downloads)  # read first: a missing file fails before hours of tokenizing
    with ExitStack() as stack:
        writers = {name: PairWriter(stack, dest, name, task.src, task.tgt)
                   for name in ("train", "valid", "test", "test.raw")}
        write_train_and_valid(task, downloads, moses, workers, writers)
        test_processor = PairProcessor(task.src, task.tgt, moses, task.aggressive, quote_fix=True)
        for (src, tgt), raw in zip(test_processor(test), test, strict=True):
            if task.lowercase:
                src, tgt = src.lower(), tgt.lower()
            writers["test"].write(src, tgt)
            writers["test.raw"].write(*raw)
        for name in ("train", "valid", "test.raw", "test"):  # test last: it marks the corpus complete
            writers[name].commit()


@command_line_tool("fairseq-admin-corpus")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-corpus", description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--downloads", required=True, help="directory the archives were unpacked into")
    parser.add_argument("--dest", "--destdir", required=True, help="where to write {train,valid,test,test.raw}.LANG")
    parser.add_argument("-s", "--source-lang", default=None, help="the task's source language (a check)")
    parser.add_argument("-t", "--target-lang", default=None, help="the task's target language (a check)")
    parser.add_argument("--pipeline", choices=["moses", "raw"], default="moses",
                        help="moses: the paper's Moses tokenization (for BPE); raw: untokenized (for sentencepiece)")
    parser.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    args = parser.parse_args(argv)
    task = TASKS[args.task]
    for given, expected, option in ((args.source_lang, task.src, "-s"), (args.target_lang, task.tgt, "-t")):
        if given is not None and given != expected:
            raise AdminError(f"{option} {given}: {args.task} translates {task.src} -> {task.tgt}; pass {option} "
                             f"{expected} or leave it out (the files hold both languages either way)")
    if all(os.path.exists(os.path.join(args.dest, f"test.{lang}")) for lang in (task.src, task.tgt)):
        print(f"fairseq-admin-corpus: {args.dest} is complete")
        return
    build(args.task, args.downloads, args.dest, args.pipeline, args.workers)


if __name__ == "__main__":
    main()
