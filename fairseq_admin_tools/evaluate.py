"""``fairseq-admin-evaluate``: run ``fairseq-generate``, then score it both ways the field reports BLEU.

    fairseq-admin-evaluate --output RUN.json --reference test.raw.en [--compound-split] -- \\
        DATA_BIN --path CKPT --gen-subset test --beam 5 --remove-bpe sentencepiece ...
    fairseq-admin-evaluate --output RUN.json --reference test.raw.en --moses-lang en [--lowercase] -- \\
        DATA_BIN --path CKPT --gen-subset test --beam 5 --remove-bpe ...

Everything after ``--`` goes to ``fairseq-generate`` unchanged (so the recipe's dry run shows the real
command). Its hypotheses (``D-`` lines, put back in corpus order) are scored two ways:

* sacreBLEU against the raw reference, whose signature makes the number comparable across papers
  (``--lowercase``: case-insensitive, for a lowercased corpus such as the paper's IWSLT'14);
* the paper's figure. With ``--moses-lang`` (the paper's Moses + BPE data): fairseq-generate's own
  ``BLEU4`` on the Moses tokens with BPE removed, as Transformer-Clinic's ``eval_*.sh`` report it, and
  the hypotheses are detokenized with sacremoses' MosesDetokenizer before sacreBLEU. Without it
  (sentencepiece data): a *tokenized* BLEU, both sides tokenized with sacrebleu's 13a (mteval) tokenizer,
  which like Moses keeps hyphenated words together, compound words split as in fairseq's
  ``compound_split_bleu.sh`` for En-De.

Results go to one JSON file, written atomically (format :data:`RESULT_FORMAT_VERSION`), with chrF and
sacreBLEU's details beside the scores; fairseq-generate's output is kept (``--generate-log``) and its
progress shown live.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import threading

from fairseq_admin_tools.errors import AdminError, command_line_tool
from fairseq_admin_tools.fairseq_commands import fairseq_command
from fairseq_admin_tools.files import AtomicFile, write_atomically
from fairseq_admin_tools.progress import bar

RESULT_FORMAT_VERSION = 2
"""2: sacreBLEU's details (n-gram precisions, brevity penalty, lengths), chrF, the generate log's path."""
HYPOTHESIS = re.compile(r"^D-(\d+)\t[^\t]*\t(.*)$")
FAIRSEQ_BLEU = re.compile(r"^Generate (\S+) with beam=(\d+): (BLEU4 = ([0-9.]+),.*)$")
COMPOUND = re.compile(r"(\S)-(\S)")


def run_generate(generate_args: list[str], log_path: str, sentences: int | None = None) -> str:
    """Run fairseq-generate with its progress shown live; its stdout is kept at ``log_path`` and returned.

    Its stdout (the hypotheses) and stderr (its log lines, shown as they come) go to the log file; a progress
    bar counts the sentences against ``sentences`` (the reference's lines), with rate and time left. The log
    is published only when fairseq-generate succeeded; the returned text is the stdout.
    """
    # fairseq-fixed 0.12.3.1's batch_by_size drops the tail of the corpus that does not fill a multiple of
    # --required-batch-size-multiple (default 8): 6 of Multi30k's 1014 validation sentences vanish. Decoding
    # needs no multiple, so ask for 1 (first, so that a value given after -- still wins). Our bar replaces
    # fairseq's own, which would draw over it.
    command = fairseq_command("fairseq-generate") + ["--required-batch-size-multiple", "1", "--no-progress-bar",
                                                     *generate_args]
    tail: collections.deque[str] = collections.deque(maxlen=5)
    output: list[str] = []
    with (subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process,
          AtomicFile(log_path) as log):
        def relay_stderr() -> None:  # fairseq-generate's log lines and warnings: shown, and kept in the log
            for line in process.stderr:
                tail.append(line.rstrip())
                sys.stderr.write(line)
                log.write(line)

        relay = threading.Thread(target=relay_stderr, daemon=True)
        relay.start()
        with bar("fairseq-generate", sentences, "sentences") as sentence_bar:
            for line in process.stdout:
                log.write(line)
                output.append(line)
                if line.startswith("S-"):
                    sentence_bar.update(1)
            if process.wait() != 0:
                relay.join()
                raise AdminError(f"fairseq-generate failed (exit {process.returncode}):\n" + "\n".join(tail))
        relay.join()
    return "".join(output)


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


def sacrebleu_score(hypotheses: list[str], references: list[str], lowercase: bool = False) -> dict:
    """sacreBLEU with what a reviewer checks (n-gram precisions, brevity penalty, lengths), and chrF beside it."""
    from sacrebleu.metrics import BLEU, CHRF

    detok = BLEU(lowercase=lowercase)
    detok_score = detok.corpus_score(hypotheses, [references])
    chrf = CHRF(lowercase=lowercase)
    chrf_score = chrf.corpus_score(hypotheses, [references])
    return {"score": round(detok_score.score, 2), "signature": str(detok.get_signature()),
            "text": f"{detok_score} {detok.get_signature()}",
            "precisions": [round(p, 2) for p in detok_score.precisions], "bp": round(detok_score.bp, 4),
            "sys_len": detok_score.sys_len, "ref_len": detok_score.ref_len,
            "chrf": {"score": round(chrf_score.score, 2), "signature": str(chrf.get_signature())}}


def score(hypotheses: list[str], references: list[str], compound_split: bool, lowercase: bool = False) -> dict:
    """sacreBLEU and the 13a tokenized BLEU (the sentencepiece pipeline's scoring)."""
    from sacrebleu.metrics import BLEU

    tok = BLEU(tokenize="none", force=True, lowercase=lowercase)
    tok_score = tok.corpus_score(tokenized(hypotheses, compound_split), [tokenized(references, compound_split)])
    return {
        "sacrebleu": sacrebleu_score(hypotheses, references, lowercase),
        "tokenized_bleu": {"score": round(tok_score.score, 2), "tokenizer": "13a", "compound_split": compound_split,
                           "text": str(tok_score)},
    }


def fairseq_bleu(generate_output: str) -> dict:
    """fairseq-generate's own BLEU line (on the text as the data is tokenized, subwords removed): the paper's figure."""
    for line in reversed(generate_output.splitlines()):
        match = FAIRSEQ_BLEU.match(line)
        if match:
            return {"score": float(match.group(4)), "text": match.group(3),
                    "how": "fairseq-generate BLEU4 on Moses tokens, BPE removed (Transformer-Clinic eval_*.sh)"}
    raise AdminError("fairseq-generate printed no 'Generate ... BLEU4 = ...' line; was the test set without targets?")


def moses_detokenize(hypotheses: list[str], lang: str) -> list[str]:
    """Moses tokens (XML-escaped, ``@-@`` hyphens) back to text, as detokenizer.perl -l LANG."""
    from sacremoses import MosesDetokenizer

    detokenizer = MosesDetokenizer(lang)
    return [detokenizer.detokenize(line.split(), return_str=True, unescape=True) for line in hypotheses]


def score_moses(generate_output: str, hypotheses: list[str], references: list[str], lang: str,
                lowercase: bool) -> tuple[dict, list[str]]:
    """The paper's BLEU (fairseq's, on Moses tokens) and sacreBLEU on the detokenized hypotheses."""
    detokenized = moses_detokenize(hypotheses, lang)
    return {"sacrebleu": sacrebleu_score(detokenized, references, lowercase),
            "paper_bleu": fairseq_bleu(generate_output)}, detokenized


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options before ``--``, fairseq-generate's after it."""
    ours, generate_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="fairseq-admin-evaluate", description=__doc__.splitlines()[0],
                                     usage="%(prog)s --output JSON --reference FILE [...] -- FAIRSEQ_GENERATE_ARGS")
    parser.add_argument("--output", required=True, help="results JSON to write")
    parser.add_argument("--reference", required=True, help="raw (detokenized) reference text, one line per sentence")
    parser.add_argument("--compound-split", action="store_true", help="split a-b compounds for tokenized BLEU (En-De)")
    parser.add_argument("--moses-lang", default=None, metavar="LANG",
                        help="hypotheses are Moses tokens in LANG (the paper's pipeline): record fairseq's BLEU4 "
                             "as the paper's figure and detokenize for sacreBLEU")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive sacreBLEU (lowercased corpus)")
    parser.add_argument("--name", default=None, help="run name recorded in the JSON")
    parser.add_argument("--generate-log", default=None, metavar="FILE",
                        help="keep fairseq-generate's output here (default: OUTPUT without .json + .generate.txt)")
    args = parser.parse_args(ours)
    if not generate_args:
        parser.error("give fairseq-generate's arguments after '--' (data directory, --path, --beam, ...)")
    if "--quiet" in generate_args:
        parser.error("fairseq-generate must not run with --quiet: the hypotheses are read from its output")
    if args.moses_lang and args.compound_split:
        parser.error("--compound-split is for the 13a tokenized BLEU; with --moses-lang the paper's BLEU is fairseq's")
    if not os.path.isfile(args.reference):
        raise AdminError(f"reference file {args.reference} does not exist")
    return args, generate_args


def read_references(path: str) -> list[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line[:-1] if line.endswith("\n") else line for line in f]


def print_scores(results: dict, args: argparse.Namespace) -> None:
    print(f"sacrebleu: {results['sacrebleu']['text']}")
    print(f"chrF: {results['sacrebleu']['chrf']['score']} {results['sacrebleu']['chrf']['signature']}")
    if args.moses_lang:
        print(f"paper BLEU (fairseq-generate, Moses tokens): {results['paper_bleu']['text']}")
    else:
        how = "13a, compound-split" if args.compound_split else "13a"
        print(f"tokenized BLEU ({how}): {results['tokenized_bleu']['text']}")


@command_line_tool("fairseq-admin-evaluate")
def main(argv: list[str] | None = None) -> None:
    args, generate_args = parse_args(sys.argv[1:] if argv is None else argv)
    stem = args.output[:-5] if args.output.endswith(".json") else args.output
    references = read_references(args.reference)
    generate_log = args.generate_log or stem + ".generate.txt"
    output = run_generate(generate_args, generate_log, len(references))
    hypotheses = hypotheses_in_order(output)
    if len(references) != len(hypotheses):
        raise AdminError(f"{len(hypotheses)} hypotheses but {len(references)} reference lines in {args.reference}")
    if args.moses_lang:
        results, hypotheses = score_moses(output, hypotheses, references, args.moses_lang, args.lowercase)
    else:
        results = score(hypotheses, references, args.compound_split, args.lowercase)
    write_atomically(stem + ".hyp.txt", "".join(h + "\n" for h in hypotheses))
    checkpoint = generate_args[generate_args.index("--path") + 1] if "--path" in generate_args else None
    record = {"format_version": RESULT_FORMAT_VERSION, "name": args.name, "checkpoint": checkpoint,
              "reference": args.reference, "sentences": len(hypotheses),
              **results, "hypotheses": stem + ".hyp.txt", "generate_log": generate_log,
              "fairseq_generate_args": generate_args}
    write_atomically(args.output, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print_scores(results, args)
    print(f"-> {args.output}")

if __name__ == "__main__":
    main()
