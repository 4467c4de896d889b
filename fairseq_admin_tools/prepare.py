"""``fairseq-admin-prepare``: parallel text -> joint subwords -> ``fairseq-preprocess --joined-dictionary``.

Two pipelines (``--pipeline``):

* ``spm`` (default; the Multi30k quickstart's): raw text -> joint sentencepiece (unigram) -> encode.
* ``bpe`` (the paper's): Moses-tokenized text (``fairseq-admin-corpus --pipeline moses``) -> subword-nmt
  ``learn_bpe`` on train.SRC + train.TGT together -> ``apply_bpe`` to every split, optionally followed by
  clean-corpus-n's rule on the BPE tokens (``--clean-after-bpe``, WMT'14 En-Fr).

Both stream their text, so memory does not grow with the corpus (learn_bpe's grows with the number of
distinct words). Each step writes into a temporary name and renames it when complete, so re-running
skips finished steps and an interrupted step is never taken as done.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fairseq_admin_tools.corpora import Cleaner, CleanRule, Pair, batched, lines, ordered_map, zip_sides
from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.fairseq_commands import fairseq_command
from fairseq_admin_tools.files import AtomicFile, publish
from fairseq_admin_tools.progress import count_lines, progress

DEFAULT_SPLITS = "train=train,valid=val,test=test_2016_flickr"
ENCODE_BATCH = 10000
PREPROCESS_LOG = "preprocess.log"  # fairseq-preprocess writes it into --destdir


def default_multi30k_dir() -> str:
    """``$MULTI30K_DIR``, else ``../shared/data/multi30k`` (relative to the working directory)."""
    return os.environ.get("MULTI30K_DIR", os.path.join("..", "shared", "data", "multi30k"))


def _find(raw_dir: str, name: str, lang: str) -> str:
    for candidate in (f"{name}.{lang}", f"{name}.{lang}.gz"):
        path = os.path.join(raw_dir, candidate)
        if os.path.exists(path):
            return path
    raise AdminError(f"no {name}.{lang}[.gz] in {raw_dir}: point --raw-dir (or $MULTI30K_DIR) at the raw text")


def read_pairs(raw_dir: str, name: str, src: str, tgt: str, limit: int | None) -> Iterator[Pair]:
    """Stripped sentence pairs of NAME.SRC / NAME.TGT, streamed; the first ``limit`` only if given.

    Lines end at ``\n`` only, as in the corpus step: ``str.splitlines`` would also cut at U+2028, U+0085,
    ``\x0b``, ``\x0c`` and ``\x1c``-``\x1e``, splitting a pair or shifting one language against the other.
    """
    pairs = zip_sides(lines(_find(raw_dir, name, src)), lines(_find(raw_dir, name, tgt)),
                      f"{name}.{src} / {name}.{tgt}")
    return ((s.strip(), t.strip()) for s, t in itertools.islice(pairs, limit or None))


def write_pairs(paths: tuple[str, str], pairs: Iterable[Pair]) -> int:
    """Write pairs into two files, each under a temporary name renamed when complete; returns the count."""
    count = 0
    with AtomicFile(paths[0]) as fs, AtomicFile(paths[1]) as ft:
        for s, t in pairs:
            fs.write(s + "\n")
            ft.write(t + "\n")
            count += 1
    return count


def _write_lines(path: str, text: Iterable[str]) -> None:
    with AtomicFile(path) as f:
        for line in text:
            f.write(line + "\n")


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int,
                        max_sentences: int | None = None) -> None:
    import sentencepiece as spm

    # WMT-sized corpora: let sentencepiece train on a random sample instead of every sentence.
    sample = {"input_sentence_size": max_sentences, "shuffle_input_sentence": True} if max_sentences else {}
    tmp_prefix = model_prefix + ".tmp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=tmp_prefix, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, num_threads=1,
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, hard_vocab_limit=False, minloglevel=2, **sample,
    )
    publish(tmp_prefix + ".vocab", model_prefix + ".vocab")
    publish(tmp_prefix + ".model", model_prefix + ".model")


def binarize(text_dir: str, stem: str, dest: str, src: str, tgt: str, splits: Iterable[str], workers: int) -> str:
    """``fairseq-preprocess --joined-dictionary`` of text_dir/SPLIT.STEM.LANG into dest/bin."""
    bin_dir = os.path.join(dest, "bin")
    if not os.path.exists(bin_dir):
        tmp_dir = bin_dir + ".tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        command = fairseq_command("fairseq-preprocess") + ["--source-lang", src, "--target-lang", tgt,
                   "--joined-dictionary", "--destdir", tmp_dir, "--workers", str(workers)]
        for split in splits:
            command += [f"--{split}pref", os.path.join(text_dir, f"{split}.{stem}")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        publish(tmp_dir, bin_dir)
        # fairseq-preprocess keeps its own log in the binarized directory; show its summary lines
        with open(os.path.join(bin_dir, PREPROCESS_LOG), encoding="utf-8") as log:
            for line in log:
                if "Dictionary:" in line or "% replaced" in line:
                    print(f"prepare: fairseq-preprocess: {line.strip()}", flush=True)
        print(f"prepare: binarized -> {bin_dir} (fairseq-preprocess's log: {PREPROCESS_LOG} there)", flush=True)
    return bin_dir


def prepare(raw_dir: str, dest: str, src: str, tgt: str, vocab_size: int,
            splits: dict[str, str], max_train_pairs: int | None, workers: int = 1,
            spm_sentences: int | None = None) -> str:
    """Raw text -> joint sentencepiece -> binarized; returns the binarized data directory for fairseq."""
    os.makedirs(dest, exist_ok=True)
    text_dir = os.path.join(dest, "text")
    os.makedirs(text_dir, exist_ok=True)
    for split, name in splits.items():
        done = tuple(os.path.join(text_dir, f"{split}.raw.{lang}") for lang in (src, tgt))
        if all(os.path.exists(p) for p in done):
            continue
        pairs = read_pairs(raw_dir, name, src, tgt, max_train_pairs if split == "train" else None)
        if split == "train":
            pairs = ((s, t) for s, t in pairs if s and t)
        count = write_pairs(done, pairs)
        print(f"prepare: {split}: {count} sentence pairs from {raw_dir}/{name}", flush=True)

    spm_prefix = os.path.join(dest, "spm")
    if not os.path.exists(spm_prefix + ".model"):
        texts = itertools.chain.from_iterable(lines(os.path.join(text_dir, f"train.raw.{lang}")) for lang in (src, tgt))
        train_sentencepiece(texts, spm_prefix, vocab_size, spm_sentences)
        print(f"prepare: trained joint sentencepiece ({vocab_size} pieces) -> {spm_prefix}.model", flush=True)

    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=spm_prefix + ".model")
    for split in splits:
        for lang in (src, tgt):
            out = os.path.join(text_dir, f"{split}.spm.{lang}")
            if os.path.exists(out):
                continue
            raw = os.path.join(text_dir, f"{split}.raw.{lang}")
            batches = batched(progress(lines(raw), f"sentencepiece {split}.{lang}", count_lines(raw)), ENCODE_BATCH)
            _write_lines(out, (" ".join(pieces) for batch in batches
                               for pieces in processor.encode(batch, out_type=str)))
    return binarize(text_dir, "spm", dest, src, tgt, splits, workers)


# --- the paper's pipeline: joint BPE on Moses tokens --------------------------------------------------

_BPE: dict[str, object] = {}


@dataclass(frozen=True)
class ApplyBpe:
    """subword-nmt's apply_bpe with CODES on both sides of each pair (picklable for worker processes)."""

    codes: str

    def __call__(self, batch: list[Pair]) -> list[Pair]:
        if self.codes not in _BPE:
            from subword_nmt.apply_bpe import BPE

            with open(self.codes, encoding="utf-8") as f:
                _BPE[self.codes] = BPE(f)
        bpe = _BPE[self.codes]
        return [(bpe.process_line(s), bpe.process_line(t)) for s, t in batch]  # type: ignore[attr-defined]


def learn_joint_bpe(train_files: list[str], codes: str, merges: int) -> None:
    """``cat train.SRC train.TGT | learn_bpe.py -s MERGES > codes`` (subword-nmt's defaults otherwise)."""
    from subword_nmt.learn_bpe import learn_bpe

    text = itertools.chain.from_iterable(lines(path) for path in train_files)
    with AtomicFile(codes) as out:
        learn_bpe(text, out, merges)


def prepare_bpe(tok_dir: str, dest: str, src: str, tgt: str, merges: int, splits: dict[str, str],
                workers: int = 1, clean_after_bpe: CleanRule | None = None,
                clean_splits: Iterable[str] = ("train", "valid")) -> str:
    """Moses-tokenized text -> joint BPE -> (clean) -> binarized; returns the binarized data directory."""
    text_dir = os.path.join(dest, "text")
    os.makedirs(text_dir, exist_ok=True)
    codes = os.path.join(dest, "bpe.codes")
    if not os.path.exists(codes):
        learn_joint_bpe([_find(tok_dir, splits["train"], lang) for lang in (src, tgt)], codes, merges)
        print(f"prepare: learned {merges} joint BPE merges -> {codes}", flush=True)
    for split, name in splits.items():
        done = tuple(os.path.join(text_dir, f"{split}.bpe.{lang}") for lang in (src, tgt))
        if all(os.path.exists(p) for p in done):
            continue
        pairs = zip_sides(lines(_find(tok_dir, name, src)), lines(_find(tok_dir, name, tgt)), f"{tok_dir}/{name}")
        total = count_lines(_find(tok_dir, name, src))
        encoded = ordered_map(ApplyBpe(codes), progress(pairs, f"BPE {split}", total, "pairs"), workers)
        if clean_after_bpe and split in clean_splits:
            encoded = Cleaner(clean_after_bpe)(encoded)
        count = write_pairs(done, encoded)
        print(f"prepare: {split}: {count} BPE-encoded pairs -> {done[0]}", flush=True)
    return binarize(text_dir, "bpe", dest, src, tgt, splits, workers)


def _clean_rule(text: str) -> CleanRule:
    try:
        lengths, ratio = text.split(":")
        low, high = lengths.split("-")
        return CleanRule(int(low), int(high), float(ratio))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX:RATIO such as 1-250:1.5, got '{text}'") from None


@command_line_tool("fairseq-admin-prepare")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", choices=["spm", "bpe"], default="spm",
                        help="spm: raw text -> joint sentencepiece; bpe: Moses tokens -> joint subword-nmt BPE")
    parser.add_argument("--raw-dir", default=None,
                        help="input text, NAME.LANG[.gz] (default: $MULTI30K_DIR or ../shared/data/multi30k)")
    parser.add_argument("--dest", "--destdir", required=True,
                        help="output directory: text/, spm.model or bpe.codes, and bin/ (fairseq-preprocess's destdir)")
    parser.add_argument("--src", "-s", "--source-lang", dest="src", default="de")
    parser.add_argument("--tgt", "-t", "--target-lang", dest="tgt", default="en")
    parser.add_argument("--vocab-size", type=int, default=8000, help="spm: sentencepiece vocabulary size")
    parser.add_argument("--bpe-merges", type=int, default=10000, help="bpe: number of merge operations (learn_bpe -s)")
    parser.add_argument("--clean-after-bpe", type=_clean_rule, default=None, metavar="MIN-MAX:RATIO",
                        help="bpe: drop train/valid pairs outside MIN-MAX BPE tokens or over RATIO (clean-corpus-n)")
    parser.add_argument("--splits", default=DEFAULT_SPLITS,
                        help=f"fairseq split=input file stem, comma-separated (default {DEFAULT_SPLITS})")
    parser.add_argument("--max-train-pairs", type=int, default=None, help="spm: use only the first N training pairs")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--spm-sentences", type=int, default=None,
                        help="spm: train sentencepiece on a random sample of N sentences (large corpora)")
    args = parser.parse_args(argv)
    raw_dir = args.raw_dir or default_multi30k_dir()
    if not os.path.isdir(raw_dir):
        raise AdminError(f"raw data directory {raw_dir} does not exist; set --raw-dir or $MULTI30K_DIR")
    splits = dict(item.split("=", 1) for item in args.splits.split(","))
    if "train" not in splits:
        raise AdminError("--splits needs a train split")
    if args.pipeline == "bpe":
        bin_dir = prepare_bpe(raw_dir, args.dest, args.src, args.tgt, args.bpe_merges, splits,
                              args.workers, args.clean_after_bpe)
    else:
        bin_dir = prepare(raw_dir, args.dest, args.src, args.tgt, args.vocab_size, splits,
                          args.max_train_pairs, args.workers, args.spm_sentences)
    print(bin_dir)


if __name__ == "__main__":
    main()
