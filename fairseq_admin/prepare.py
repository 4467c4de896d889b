"""``fairseq-admin-prepare``: raw parallel text -> joint sentencepiece -> ``fairseq-preprocess``.

Each step writes into a temporary name and renames it when complete, so re-running skips
finished steps and an interrupted step is never taken as done.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable

from fairseq_admin.errors import AdminError
from fairseq_admin.files import write_atomically

DEFAULT_SPLITS = "train=train,valid=val,test=test_2016_flickr"


def default_multi30k_dir() -> str:
    """``$MULTI30K_DIR``, else ``../shared/data/multi30k`` (relative to the working directory)."""
    return os.environ.get("MULTI30K_DIR", os.path.join("..", "shared", "data", "multi30k"))


def fairseq_command(name: str) -> list[str]:
    """A fairseq console script from the same environment as this Python, else from PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return [beside] if os.path.exists(beside) else [name]


def _open_text(path: str):
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def _find(raw_dir: str, name: str, lang: str) -> str:
    for candidate in (f"{name}.{lang}", f"{name}.{lang}.gz"):
        path = os.path.join(raw_dir, candidate)
        if os.path.exists(path):
            return path
    raise AdminError(f"no {name}.{lang}[.gz] in {raw_dir}: point --raw-dir (or $MULTI30K_DIR) at the raw text")


def read_pairs(raw_dir: str, name: str, src: str, tgt: str, limit: int | None) -> list[tuple[str, str]]:
    with _open_text(_find(raw_dir, name, src)) as fs, _open_text(_find(raw_dir, name, tgt)) as ft:
        src_lines, tgt_lines = fs.read().splitlines(), ft.read().splitlines()
    if len(src_lines) != len(tgt_lines):
        raise AdminError(f"{name}.{src} has {len(src_lines)} lines but {name}.{tgt} has {len(tgt_lines)}")
    pairs = [(s.strip(), t.strip()) for s, t in zip(src_lines, tgt_lines, strict=True)]
    return pairs[:limit] if limit else pairs


def _write_lines(path: str, lines: Iterable[str]) -> None:
    write_atomically(path, "".join(line + "\n" for line in lines))


def train_sentencepiece(texts: list[str], model_prefix: str, vocab_size: int,
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
    os.replace(tmp_prefix + ".vocab", model_prefix + ".vocab")
    os.replace(tmp_prefix + ".model", model_prefix + ".model")


def prepare(raw_dir: str, dest: str, src: str, tgt: str, vocab_size: int,
            splits: dict[str, str], max_train_pairs: int | None, workers: int = 1,
            spm_sentences: int | None = None) -> str:
    """Prepare one language pair; returns the binarized data directory for fairseq."""
    os.makedirs(dest, exist_ok=True)
    text_dir = os.path.join(dest, "text")
    os.makedirs(text_dir, exist_ok=True)
    for split, name in splits.items():
        done = [os.path.join(text_dir, f"{split}.raw.{lang}") for lang in (src, tgt)]
        if all(os.path.exists(p) for p in done):
            continue
        pairs = read_pairs(raw_dir, name, src, tgt, max_train_pairs if split == "train" else None)
        if split == "train":
            pairs = [(s, t) for s, t in pairs if s and t]
        for side, path in enumerate(done):
            _write_lines(path, (pair[side] for pair in pairs))
        print(f"prepare: {split}: {len(pairs)} sentence pairs from {raw_dir}/{name}", flush=True)

    spm_prefix = os.path.join(dest, "spm")
    if not os.path.exists(spm_prefix + ".model"):
        texts = []
        for lang in (src, tgt):
            with open(os.path.join(text_dir, f"train.raw.{lang}"), encoding="utf-8") as f:
                texts += f.read().splitlines()
        train_sentencepiece(texts, spm_prefix, vocab_size, spm_sentences)
        print(f"prepare: trained joint sentencepiece ({vocab_size} pieces) -> {spm_prefix}.model", flush=True)

    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=spm_prefix + ".model")
    for split in splits:
        for lang in (src, tgt):
            out = os.path.join(text_dir, f"{split}.spm.{lang}")
            if os.path.exists(out):
                continue
            with open(os.path.join(text_dir, f"{split}.raw.{lang}"), encoding="utf-8") as f:
                lines = f.read().splitlines()
            _write_lines(out, (" ".join(pieces) for pieces in processor.encode(lines, out_type=str)))

    bin_dir = os.path.join(dest, "bin")
    if not os.path.exists(bin_dir):
        tmp_dir = bin_dir + ".tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        command = fairseq_command("fairseq-preprocess") + ["--source-lang", src, "--target-lang", tgt,
                   "--joined-dictionary", "--destdir", tmp_dir, "--workers", str(workers)]
        for split in splits:
            command += [f"--{split}pref", os.path.join(text_dir, f"{split}.spm")]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp_dir, bin_dir)
        print(f"prepare: binarized -> {bin_dir}", flush=True)
    return bin_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fairseq-admin-prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default=None, help="raw text (default: $MULTI30K_DIR or ../shared/data/multi30k)")
    parser.add_argument("--dest", required=True, help="output directory (text/, spm.model, bin/)")
    parser.add_argument("--src", default="de")
    parser.add_argument("--tgt", default="en")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--splits", default=DEFAULT_SPLITS,
                        help=f"fairseq split=raw file stem, comma-separated (default {DEFAULT_SPLITS})")
    parser.add_argument("--max-train-pairs", type=int, default=None, help="use only the first N training pairs")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--spm-sentences", type=int, default=None,
                        help="train sentencepiece on a random sample of N sentences (large corpora)")
    args = parser.parse_args(argv)
    raw_dir = args.raw_dir or default_multi30k_dir()
    if not os.path.isdir(raw_dir):
        sys.exit(f"fairseq-admin-prepare: error: raw data directory {raw_dir} does not exist; "
                 "set --raw-dir or $MULTI30K_DIR")
    splits = dict(item.split("=", 1) for item in args.splits.split(","))
    if "train" not in splits:
        sys.exit("fairseq-admin-prepare: error: --splits needs a train split")
    try:
        bin_dir = prepare(raw_dir, args.dest, args.src, args.tgt, args.vocab_size, splits,
                          args.max_train_pairs, args.workers, args.spm_sentences)
    except AdminError as err:
        sys.exit(f"fairseq-admin-prepare: error: {err}")
    print(bin_dir)


if __name__ == "__main__":
    main()
