"""The paper's tasks end to end: ``recipes/run.sh TASK admin 2`` on stand-in archives with the upstream layouts
(tests/upstream_archives.py): download skipped, unpack, Moses + cleaning + joint BPE + fairseq-preprocess,
profile, a few updates of a tiny model, average, generate, both BLEUs — for IWSLT'14 De-En, WMT'14 En-De
and En-Fr. Then what each stage must have done, as the original's pre-process scripts do it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import upstream_archives
from conftest import BIN, MULTI30K, REPO

RUN = REPO / "recipes" / "run.sh"
TINY = ("--encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 --decoder-ffn-embed-dim 64 "
        "--encoder-attention-heads 2 --decoder-attention-heads 2 --max-valid-steps 1 --required-batch-size-multiple 1")
BPE_MERGES = 300
SRC_TGT = {"iwslt14_de_en": ("de", "en"), "wmt14_en_de": ("en", "de"), "wmt14_en_fr": ("en", "fr")}
FAIRSEQ_BLEU = re.compile(r"BLEU4 = ([0-9.]+), ([0-9.]+)/([0-9.]+)/([0-9.]+)/([0-9.]+) "
                          r"\(BP=([0-9.]+), ratio=([0-9.]+), syslen=(\d+), reflen=(\d+)\)")


def read(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def recipe_env(work: Path, **env: str) -> dict[str, str]:
    """One whole recipe on a 2-layer, 32-wide model: one epoch of the stand-in corpus, last epoch 'averaged'."""
    return {**os.environ, "ADMIN_WORK": str(work / "work"), "RESULTS_DIR": str(work / "results"),
            "NGPUS": "0", "OMP_NUM_THREADS": "1", "WORKERS_PREPARE": "1", "BPE_MERGES": str(BPE_MERGES),
            "MAX_TOKENS": "4096", "EFFECTIVE_TOKENS": "4096", "MAX_EPOCH": "1", "AVG_LAST": "1",
            "TRAIN_ARGS": TINY, "GENERATE_ARGS": "--max-len-a 0 --max-len-b 8", **env}


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, Path]:
    """The three paper recipes, run side by side (each is a chain of single-threaded processes)."""
    if not MULTI30K.is_dir():
        pytest.fail(f"Multi30k not found at {MULTI30K}; set MULTI30K_DIR (the stand-in archives are made from it)")
    works = {task: tmp_path_factory.mktemp(task) for task in SRC_TGT}
    upstream_archives.iwslt14(MULTI30K, works["iwslt14_de_en"] / "work" / "downloads")
    upstream_archives.wmt14(MULTI30K, works["wmt14_en_de"] / "work" / "downloads", "wmt14_en_de")
    upstream_archives.wmt14(MULTI30K, works["wmt14_en_fr"] / "work" / "downloads", "wmt14_en_fr",
                            pairs_per_corpus=100, giga_pairs=2300)
    seeds = {"iwslt14_de_en": {"SEEDS": "1111 2222"}}  # two seeds: one profile, two runs, a summary
    running = {task: subprocess.Popen(["bash", str(RUN), task, "admin", "2"], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, cwd=REPO,
                                      env=recipe_env(work, **seeds.get(task, {})))
               for task, work in works.items()}
    for task, process in running.items():
        output, _ = process.communicate(timeout=900)
        (works[task] / "run.log").write_text(output)
        (works[task] / "run.status").write_text(str(process.returncode))
    return works


def recipe(recipes: dict[str, Path], task: str) -> Path:
    """The work directory of one task's recipe, after checking that the recipe succeeded."""
    status, log = (recipes[task] / "run.status").read_text(), (recipes[task] / "run.log").read_text()
    assert status == "0", f"recipes/run.sh {task} admin 2 failed ({status}):\n{log[-5000:]}"
    return recipes[task]


def check_detokenized_references(moses: Path, tgt: str, lowercase: bool) -> None:
    """The sacreBLEU path on the references themselves: Moses tokens, detokenized, against the raw text."""
    from fairseq_admin_tools.evaluate import moses_detokenize, sacrebleu_score

    tokens, raw = read(moses / f"test.{tgt}"), read(moses / f"test.raw.{tgt}")
    assert tokens != raw
    score = sacrebleu_score(moses_detokenize(tokens, tgt), raw, lowercase=lowercase)["score"]
    assert score >= 98.0, score


def check_scores(record: dict, test_size: int, lowercase: bool) -> None:
    """Both BLEUs present; the paper's is fairseq-generate's own line, on the Moses-token test set."""
    assert record["sentences"] == test_size
    signature = record["sacrebleu"]["signature"]
    assert signature.startswith(f"nrefs:1|case:{'lc' if lowercase else 'mixed'}|eff:no|tok:13a"), signature
    assert 0 <= record["sacrebleu"]["score"] <= 100
    paper = record["paper_bleu"]
    assert paper["text"].startswith("BLEU4 = ") and paper["score"] == float(FAIRSEQ_BLEU.match(paper["text"])[1])
    # fairseq's counts are over the Moses tokens of its T- (reference) and D- (hypothesis) lines, BPE removed.
    log = Path(record["generate_log"]).read_text(encoding="utf-8")
    targets = re.findall(r"^T-\d+\t(.*)$", log, flags=re.M)
    hypotheses = re.findall(r"^D-\d+\t[^\t]*\t(.*)$", log, flags=re.M)
    assert len(targets) == len(hypotheses) == test_size
    assert not any("@@" in line for line in targets + hypotheses)  # --remove-bpe
    syslen, reflen = (int(x) for x in FAIRSEQ_BLEU.match(paper["text"]).groups()[7:9])
    # (libbleu keeps the end-of-sentence token of an empty sentence: it counts as 1)
    assert (syslen, reflen) == (sum(max(1, len(h.split())) for h in hypotheses),
                                sum(max(1, len(t.split())) for t in targets))
    detokenized = read(Path(record["hypotheses"]))
    assert len(detokenized) == test_size and not any("&apos;" in line or "&quot;" in line for line in detokenized)


def test_iwslt14_recipe(recipes: dict[str, Path]) -> None:
    iwslt = recipe(recipes, "iwslt14_de_en")
    data = iwslt / "work" / "data" / "iwslt14_de_en"
    moses = data / "moses"
    train_en, valid_en, test_en = (read(moses / f"{split}.en") for split in ("train", "valid", "test"))
    kept = train_en + valid_en
    # Metadata: <url>/<talkid>/<keywords> lines dropped, <title>/<description> tags stripped, others (<speaker>)
    # tokenized like any line, as the original's grep/sed/tokenizer.perl do.
    assert not any(line.split()[1:2] in (["url"], ["talkid"], ["keywords"]) for line in kept)
    assert "talk 0 ( en )" in kept and not any("title &gt;" in line or "<title>" in line for line in kept)
    assert "&lt; speaker &gt; speaker 0 &lt; / speaker &gt;" in kept
    # clean-corpus-n -ratio 1.5 ... 1 175 on Moses tokens, then lowercase; valid = every 23rd kept pair.
    assert not any(len(line.split()) > 175 or line.startswith("sixwords") for line in kept)
    assert "“ a two-way test \u200b for tom &amp; jerry ” ." in kept  # no normalization, no -a; lowercased
    assert all(line == line.lower() for line in kept + test_en)
    assert len(valid_en) == len(kept) // 23
    # Test: dev2010 + dev2012 + tst2010-2012 <seg>s, ’ -> ' then tokenized; the raw ones kept for sacreBLEU.
    assert len(test_en) == 30 and test_en[0].endswith("it &apos;s")
    assert read(moses / "test.raw.en")[0].endswith("It\u2019s")
    check_detokenized_references(moses, "en", lowercase=True)
    # Joint BPE (learn_bpe -s N on train.de + train.en) applied to every split; joined dictionary.
    codes = read(data / "bpe.codes")
    assert codes[0] == "#version: 0.2" and len(codes) == BPE_MERGES + 1
    assert any("@@" in line for line in read(data / "text" / "train.bpe.de"))
    assert (data / "bin" / "dict.de.txt").read_text() == (data / "bin" / "dict.en.txt").read_text()
    # Seeds: one profile (seed 1111), two runs, two results.
    checkpoints = iwslt / "work" / "checkpoints"
    assert (checkpoints / "iwslt14_de_en-admin-2L-2L-s1111" / "admin_profile.json").exists()
    assert not (checkpoints / "iwslt14_de_en-admin-2L-2L-s2222" / "admin_profile.json").exists()
    for seed in (1111, 2222):
        record = json.loads((iwslt / "results" / f"iwslt14_de_en-admin-2L-2L-s{seed}.json").read_text())
        assert record["name"] == f"iwslt14_de_en-admin-2L-2L-s{seed}"
        check_scores(record, 30, lowercase=True)


def test_summary_of_seeds(recipes: dict[str, Path], tmp_path: Path) -> None:
    """fairseq-admin-summary pools the two seeds' results into mean ± std."""
    iwslt = recipe(recipes, "iwslt14_de_en")
    out = subprocess.run([str(BIN / "fairseq-admin-summary"), str(iwslt / "results"), "--json",
                          str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv")],
                         capture_output=True, text=True, check=True)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["format_version"] == 1 and summary["paired_bootstrap"] == []  # one method: nothing to compare
    [row] = summary["summary"]
    records = [json.loads((iwslt / "results" / f"iwslt14_de_en-admin-2L-2L-s{seed}.json").read_text())
               for seed in (1111, 2222)]
    scores = [r["paper_bleu"]["score"] for r in records]
    assert (row["task"], row["method"], row["layers"], row["n"], row["seeds"]) == (
        "iwslt14_de_en", "admin", "2L-2L", 2, "1111 2222")
    assert row["paper_bleu_mean"] == round(sum(scores) / 2, 2)
    assert row["paper_bleu_std"] == round(abs(scores[0] - scores[1]) / 2 ** 0.5, 2)
    assert "iwslt14_de_en" in out.stdout and "±" in out.stdout
    assert (tmp_path / "s.csv").read_text().splitlines()[0].startswith("task,method,layers,seeds,n,")
    empty = subprocess.run([str(BIN / "fairseq-admin-summary"), str(tmp_path / "none")], capture_output=True, text=True)
    assert empty.returncode != 0 and "does not exist" in empty.stderr


def test_wmt14_en_de_recipe(recipes: dict[str, Path]) -> None:
    tmp_path = recipe(recipes, "wmt14_en_de")
    data = tmp_path / "work" / "data" / "wmt14_en_de"
    moses = data / "moses"
    train_en, train_de = read(moses / "train.en"), read(moses / "train.de")
    # europarl-v7 + commoncrawl + news-commentary-v12, normalize-punctuation + remove-non-printing + -a tokens.
    assert train_de.count("&quot; Ein Zwei @-@ Wege @-@ Test für Tom &amp; Jerry &quot; .") == 3
    # clean-corpus-n 1 80 with its default ratio 9: the 6:1 pair stays, the 12:1 and the 260-word pairs go.
    assert train_en.count("Sixwords") == 3 and "Twelve" not in train_en
    assert max(len(line.split()) for line in train_en + train_de) <= 80
    assert len(train_en) == 3 * (120 + 5) - 3 * 3  # 120 pairs + 5 specials per corpus; 3 dropped in each
    # valid = newstest2013 from dev.tgz (normalized, tokenized), test = newstest2014's <seg>s.
    assert len(read(moses / "valid.de")) == 40 and len(read(moses / "test.de")) == 20
    assert read(moses / "test.raw.de") == upstream_archives.archive_lines(MULTI30K / "test_2016_flickr.de.gz", 20)
    check_detokenized_references(moses, "de", lowercase=False)
    record = json.loads((tmp_path / "results" / "wmt14_en_de-admin-2L-2L-s1111.json").read_text())
    check_scores(record, 20, lowercase=False)


def test_wmt14_en_fr_recipe(recipes: dict[str, Path]) -> None:
    tmp_path = recipe(recipes, "wmt14_en_fr")
    data = tmp_path / "work" / "data" / "wmt14_en_fr"
    moses = data / "moses"
    # Five corpora (giga-fren read from its .gz members), tokenized; valid = every 1333rd pair, no cleaning yet.
    train_en, valid_en = read(moses / "train.en"), read(moses / "valid.en")
    total = 4 * (100 + 5) + 2300 + 5
    assert len(train_en) + len(valid_en) == total and len(valid_en) == total // 1333
    assert train_en.count("Sixwords") == 5
    assert sum(len(line.split()) > 250 for line in read(moses / "train.fr")) == 5
    # Cleaned after BPE (clean-corpus-n -ratio 1.5 ... 1 250 on the BPE tokens of train and valid).
    bpe_en, bpe_fr = read(data / "text" / "train.bpe.en"), read(data / "text" / "train.bpe.fr")
    assert "Sixwords" not in [line.replace("@@ ", "") for line in bpe_en] and len(bpe_en) < len(train_en)
    assert all(len(s.split()) <= 250 and len(t.split()) <= 250 and len(s.split()) <= 1.5 * len(t.split())
               and len(t.split()) <= 1.5 * len(s.split()) for s, t in zip(bpe_en, bpe_fr, strict=True))
    check_detokenized_references(moses, "fr", lowercase=False)
    record = json.loads((tmp_path / "results" / "wmt14_en_fr-admin-2L-2L-s1111.json").read_text())
    check_scores(record, 20, lowercase=False)
