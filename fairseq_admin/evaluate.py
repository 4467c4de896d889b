"""``fairseq-admin-evaluate``: run ``fairseq-generate``, then score it both ways the field reports BLEU.

    fairseq-admin-evaluate --output RUN.json --reference test.raw.en [--compound-split] -- \\
        DATA_BIN --path CKPT --gen-subset test --beam 5 --remove-bpe sentencepiece ...

Everything after ``--`` goes to ``fairseq-generate`` unchanged (so the recipe's dry run shows the real
command). Its detokenized hypotheses (``D-`` lines, put back in corpus order) are scored against the raw
reference with sacrebleu, whose signature makes the number comparable across papers, and with the
paper-style *tokenized* BLEU: both sides tokenized with sacrebleu's 13a (mteval) tokenizer, which like
Moses keeps hyphenated words together, compound words split as in fairseq's ``compound_split_bleu.sh``
for En-De, and scored on those tokens. Results go to one JSON file, written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

from fairseq_admin.errors import AdminError
from fairseq_admin.prepare import fairseq_command
from fairseq_admin.files import write_atomically

HYPOTHESIS = re.compile(r"^D-(\d+)\t[^\t]*\t(.*)$")
COMPOUND = re.compile(r"(\S)-(\S)")


def run_generate(generate_args: list[str], log_path: str) -> str:
    """Run fairseq-generate; its whole stdout is kept next to the results (atomically) and returned."""
    # fairseq-fixed 0.12.3.1's batch_by_size drops the tail of the corpus that does not fill a multiple of
    # --required-batch-size-multiple (default 8): 6 of Multi30k's 1014 validation sentences vanish. Decoding
    # needs no multiple, so ask for 1 (first, so that a value given after -- still wins).
    command = fairseq_command("fairseq-generate") + ["--required-batch-size-multiple", "1"] + generate_args
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise AdminError(f"fairseq-generate failed (exit {result.returncode}):\n{tail}")
    write_atomically(log_path, result.stdout)
    return result.stdout


def hypotheses_in_order(generate_output: str) -> list[str]:
    """The detokenized hypotheses, by sentence id (fairseq-generate prints them in batch order)."""
    found: dict[int, str] = {}
    for line in generate_output.splitlines():
        match = HYPOTHESIS.match(line)
        if match:
            found.setdefault(int(match.group(1)), match.group(2))  # the first (best) of an n-best list
    if not found:
        raise AdminError("fairseq-generate printed no hypotheses (no D- lines); was --quiet passed?")
    missing = sorted(set(range(len(found))) - set(found))
    if missing:
        raise AdminError(f"fairseq-generate output lacks sentences {missing[:5]}...; were some inputs skipped?")
    return [found[i] for i in range(len(found))]


def tokenized(lines: list[str], compound_split: bool) -> list[str]:
    """13a tokens, with ``a-b`` -> ``a ##AT##-##AT## b`` when compound splitting (En-De convention)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    out = [tokenize(line) for line in lines]
    return [COMPOUND.sub(r"\1 ##AT##-##AT## \2", line) for line in out] if compound_split else out


def score(hypotheses: list[str], references: list[str], compound_split: bool) -> dict:
    from sacrebleu.metrics import BLEU

    detok = BLEU()
    detok_score = detok.corpus_score(hypotheses, [references])
    tok = BLEU(tokenize="none", force=True)
    tok_score = tok.corpus_score(tokenized(hypotheses, compound_split), [tokenized(references, compound_split)])
    return {
        "sacrebleu": {"score": round(detok_score.score, 2), "signature": str(detok.get_signature()),
                      "text": f"{detok_score} {detok.get_signature()}"},
        "tokenized_bleu": {"score": round(tok_score.score, 2), "tokenizer": "13a", "compound_split": compound_split,
                           "text": str(tok_score)},
    }


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ours, generate_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="fairseq-admin-evaluate", description=__doc__.splitlines()[0],
                                     usage="%(prog)s --output JSON --reference FILE [...] -- FAIRSEQ_GENERATE_ARGS")
    parser.add_argument("--output", required=True, help="results JSON to write")
    parser.add_argument("--reference", required=True, help="raw (detokenized) reference text, one line per sentence")
    parser.add_argument("--compound-split", action="store_true", help="split a-b compounds for tokenized BLEU (En-De)")
    parser.add_argument("--name", default=None, help="run name recorded in the JSON")
    args = parser.parse_args(ours)
    if not generate_args:
        parser.error("give fairseq-generate's arguments after '--' (data directory, --path, --beam, ...)")
    if "--quiet" in generate_args:
        parser.error("fairseq-generate must not run with --quiet: the hypotheses are read from its output")
    if not os.path.isfile(args.reference):
        sys.exit(f"fairseq-admin-evaluate: error: reference file {args.reference} does not exist")
    stem = args.output[:-5] if args.output.endswith(".json") else args.output
    try:
        hypotheses = hypotheses_in_order(run_generate(generate_args, stem + ".generate.txt"))
        with open(args.reference, encoding="utf-8") as f:
            references = f.read().splitlines()
        if len(references) != len(hypotheses):
            raise AdminError(f"{len(hypotheses)} hypotheses but {len(references)} reference lines in {args.reference}")
        results = score(hypotheses, references, args.compound_split)
    except AdminError as err:
        sys.exit(f"fairseq-admin-evaluate: error: {err}")
    write_atomically(stem + ".hyp.txt", "".join(h + "\n" for h in hypotheses))
    checkpoint = generate_args[generate_args.index("--path") + 1] if "--path" in generate_args else None
    record = {"name": args.name, "checkpoint": checkpoint, "reference": args.reference, "sentences": len(hypotheses),
              **results, "hypotheses": stem + ".hyp.txt", "fairseq_generate_args": generate_args}
    write_atomically(args.output, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"sacrebleu: {results['sacrebleu']['text']}")
    how = "13a, compound-split" if args.compound_split else "13a"
    print(f"tokenized BLEU ({how}): {results['tokenized_bleu']['text']}")
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
