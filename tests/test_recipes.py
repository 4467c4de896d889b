"""The recipes: every task × method × depth dry-runs to commands fairseq's own parsers accept, with the
paper's effective batch for any GPU count; and the Multi30k recipe runs end to end at tiny size."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, MULTI30K, REPO

from fairseq_admin_tools.methods import METHODS

RUN = REPO / "recipes" / "run.sh"
PAPER_TASKS = {  # task: depths, effective batch per depth
    "iwslt14_de_en": {"6": 4096, "12": 4096},
    "wmt14_en_de": {"6": 32768, "12": 32768, "18-18": 32768},
    "wmt14_en_fr": {"6": 640000, "60L-12L": 1280000},
}
MULTI30K_TASKS = ["multi30k", "multi30k_de_en", "multi30k_en_de", "multi30k_en_fr"]
PAPER_METHODS = ["admin", "postln", "preln"]
OUR_TOOLS = {"fairseq-admin-prepare", "fairseq-admin-corpus", "fairseq-admin-average", "fairseq-admin-evaluate"}
LAUNCHERS = {"torchrun", "srun"}


def dry_run(*args: str, env: dict | None = None, launchers: dict | None = None) -> list[list[str]]:
    """The commands ``run.sh --dry-run`` prints, split as the shell would; comments dropped.

    A launcher prefix (``torchrun ... --no-python``, ``srun ...``) is cut off and, if ``launchers`` is
    given, recorded there under its name."""
    result = subprocess.run(["bash", str(RUN), "--dry-run", *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]
    for command in commands:
        if command[0] == "env":  # env VAR=VALUE ... tool
            command[:] = [word for word in command[1:] if "=" not in word or word.startswith("-")]
        if command[0] in LAUNCHERS:
            start = command.index("fairseq-train")
            if launchers is not None:
                launchers.setdefault(command[0], []).append(command[:start])
            command[:] = command[start:]
    return commands


def parse(command: list[str]):
    """Parse one printed fairseq command with fairseq's real parser (our plugin loaded via --user-dir)."""
    from fairseq import options

    tool, args = command[0], command[1:]
    if tool == "fairseq-admin-evaluate":
        tool, args = "fairseq-generate", args[args.index("--") + 1:]
    parsers = {
        "fairseq-train": options.get_training_parser,
        "fairseq-generate": options.get_generation_parser,
        "fairseq-preprocess": options.get_preprocessing_parser,
    }
    if tool not in parsers:
        return None
    if tool == "fairseq-preprocess":
        return parsers[tool]().parse_args(args)
    return options.parse_args_and_arch(parsers[tool](), args)


def check_commands(commands: list[list[str]]) -> dict[str, list]:
    parsed: dict[str, list] = {}
    for command in commands:
        tool = command[0]
        assert tool in OUR_TOOLS | {"fairseq-train", "curl", "mv", "tar"}, command
        if tool in OUR_TOOLS:
            assert (BIN / tool).exists(), f"{tool} is not installed (pip install -e .)"
        args = parse(command)
        if args is not None:
            parsed.setdefault("fairseq-generate" if tool == "fairseq-admin-evaluate" else tool, []).append(args)
    return parsed


@pytest.mark.parametrize("method", PAPER_METHODS)
@pytest.mark.parametrize("ngpus", ["1", "3"])
@pytest.mark.parametrize("task,layers", [(t, d) for t, depths in PAPER_TASKS.items() for d in depths])
def test_paper_recipe_dry_run_parses(task: str, layers: str, ngpus: str, method: str) -> None:
    commands = dry_run(task, method, layers, env={"NGPUS": ngpus})
    parsed = check_commands(commands)
    trains = parsed["fairseq-train"]
    assert len(trains) == (2 if method == "admin" else 1)
    train = trains[-1]
    assert train.init_type == ("adaptive" if method == "admin" else "default")
    assert train.encoder_normalize_before == train.decoder_normalize_before == (method == "preln")
    assert train.optimizer == "radam" and train.fp16 and train.distributed_world_size == int(ngpus)
    effective = PAPER_TASKS[task][layers]
    batch = train.distributed_world_size * train.max_tokens * train.update_freq[0]
    assert batch == effective if effective % int(ngpus) == 0 else effective - batch < train.update_freq[0] * int(ngpus)
    assert all(t.ffn_init == "xavier" for t in trains)  # fairseq 0.8's FFN init, all three methods
    if method == "admin":
        profile = trains[0]
        assert profile.init_type == "adaptive-profiling" and profile.distributed_world_size == 1 and not profile.fp16
        assert profile.admin_profile == train.admin_profile
        assert profile.admin_profile.endswith("-s1111/admin_profile.json")
        assert profile.admin_profile_padding == train.admin_profile_padding == "include"
        assert profile.admin_profile_tokens == 1  # one batch, as the original's first forward pass
    assert train.save_dir.endswith(f"-{method}-{train.encoder_layers}L-{train.decoder_layers}L-s1111")
    evaluate = parsed["fairseq-generate"][0]
    assert evaluate.path.endswith(".pt") and evaluate.gen_subset == "test"
    assert (evaluate.beam, evaluate.lenpen) == {"iwslt14_de_en": (5, 1.0), "wmt14_en_de": (4, 0.6),
                                                "wmt14_en_fr": (5, 0.8)}[task]
    assert evaluate.post_process == "subword_nmt" and evaluate.batch_size == 128  # eval_*.sh: --remove-bpe
    [corpus] = [c for c in commands if c[0] == "fairseq-admin-corpus"]
    assert corpus[corpus.index("--pipeline") + 1] == "moses"
    [prepare] = [c for c in commands if c[0] == "fairseq-admin-prepare"]
    merges = {"iwslt14_de_en": "10000", "wmt14_en_de": "32764", "wmt14_en_fr": "40000"}[task]
    assert prepare[prepare.index("--bpe-merges") + 1] == merges
    assert ("--clean-after-bpe" in prepare) == (task == "wmt14_en_fr")
    [evaluate_cli] = [c for c in commands if c[0] == "fairseq-admin-evaluate"]
    assert evaluate_cli[evaluate_cli.index("--moses-lang") + 1] == task[-2:]
    assert ("--lowercase" in evaluate_cli) == (task == "iwslt14_de_en")


@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
@pytest.mark.parametrize("task,layers", [("wmt14_en_de", "6"), ("wmt14_en_fr", "60L-12L"), ("iwslt14_de_en", "6")])
def test_two_nodes_dry_run_keeps_the_paper_batch(task: str, layers: str, launcher: str) -> None:
    """NNODES=2 x 8 GPUs: training through torchrun / srun, the paper's batch over all 16 workers; node 0 does the
    rest, node 1 only trains."""
    env = {"NGPUS": "8", "NNODES": "2", "NODE_RANK": "0", "MASTER_ADDR": "node0", "MASTER_PORT": "29555",
           "LAUNCHER": launcher}
    launchers: dict = {}
    parsed = check_commands(dry_run(task, "admin", layers, env=env, launchers=launchers))
    profile, train = parsed["fairseq-train"]
    assert profile.distributed_world_size == 1 and profile.init_type == "adaptive-profiling"
    effective = PAPER_TASKS[task][layers]
    assert train.distributed_world_size == 16
    batch = 16 * train.max_tokens * train.update_freq[0]
    assert batch == effective if effective % 16 == 0 else effective - batch < train.update_freq[0] * 16
    [prefix] = launchers["torchrun" if launcher == "torchrun" else "srun"]
    options = dict(zip(prefix[1::2], prefix[2::2], strict=False))
    if launcher == "torchrun":
        assert {k: options[k] for k in ("--nnodes", "--nproc-per-node", "--node-rank", "--master-addr",
                                       "--master-port")} == {"--nnodes": "2", "--nproc-per-node": "8",
                                                             "--node-rank": "0", "--master-addr": "node0",
                                                             "--master-port": "29555"}
        assert prefix[-1] == "--no-python"
    else:
        assert options["--nodes"] == "2" and options["--ntasks-per-node"] == "8"
        assert train.distributed_port == 29555  # fairseq's SLURM init: tcp://<first node>:port, rank = SLURM_PROCID
    assert "fairseq-generate" in parsed  # node 0 evaluates
    # Node 1 runs only the training command, identical to node 0's but for --node-rank.
    other: dict = {}
    node1 = dry_run(task, "admin", layers, env={**env, "NODE_RANK": "1"}, launchers=other)
    assert [c[0] for c in node1] == ["fairseq-train"]
    assert node1[0] == dry_run(task, "admin", layers, "train", env=env)[0]
    if launcher == "torchrun":
        assert other["torchrun"][0][other["torchrun"][0].index("--node-rank") + 1] == "1"


def test_seeds_share_one_profile_and_never_share_a_run() -> None:
    """SEEDS runs every seed in turn from one profile (the first seed's); SEED=2222 is its own run."""
    parsed = check_commands(dry_run("iwslt14_de_en", "admin", "6", env={"NGPUS": "1", "SEEDS": "1111 2222 3333"}))
    profile, *trains = parsed["fairseq-train"]
    assert profile.seed == 1111 and [t.seed for t in trains] == [1111, 2222, 3333]
    assert len({t.save_dir for t in trains}) == 3 and all(t.save_dir.endswith(f"-s{t.seed}") for t in trains)
    assert {t.admin_profile for t in trains} == {profile.admin_profile}
    assert [g.path.split("/")[-2] for g in parsed["fairseq-generate"]] == [
        f"iwslt14_de_en-admin-6L-6L-s{seed}" for seed in (1111, 2222, 3333)]
    alone = check_commands(dry_run("iwslt14_de_en", "admin", "6", env={"NGPUS": "1", "SEED": "2222"}))
    train = alone["fairseq-train"][-1]
    assert train.seed == 2222 and train.save_dir.endswith("-s2222") and train.admin_profile == profile.admin_profile
    postln = check_commands(dry_run("iwslt14_de_en", "postln", "6", env={"NGPUS": "1", "SEEDS": "1 2"}))
    assert [t.save_dir.split("-")[-1] for t in postln["fairseq-train"]] == ["s1", "s2"]


@pytest.mark.parametrize("task", list(PAPER_TASKS))
def test_paper_tasks_keep_sentencepiece_as_an_option(task: str) -> None:
    commands = dry_run(task, "admin", "6", "prepare", env={"NGPUS": "1", "PIPELINE": "spm"})
    [corpus] = [c for c in commands if c[0] == "fairseq-admin-corpus"]
    [prepare] = [c for c in commands if c[0] == "fairseq-admin-prepare"]
    assert corpus[corpus.index("--pipeline") + 1] == "raw" and prepare[prepare.index("--pipeline") + 1] == "spm"
    generate = check_commands(dry_run(task, "admin", "6", "eval", env={"NGPUS": "1", "PIPELINE": "spm"}))[
        "fairseq-generate"][0]
    assert generate.post_process == "sentencepiece"


def test_paper_hyper_parameters() -> None:
    """Spot-check the paper's settings (and bf16 as an option) in the parsed training commands."""
    expected = {"iwslt14_de_en": (7e-4, 6000, 0.3, 90), "wmt14_en_de": (1e-3, 8000, 0.1, 100),
                "wmt14_en_fr": (7e-4, 8000, 0.1, 50)}
    for task, (lr, warmup, dropout, epochs) in expected.items():
        train = check_commands(dry_run(task, "admin", "6", "train", env={"NGPUS": "4", "PRECISION": "bf16"}))[
            "fairseq-train"][0]
        assert (train.lr[0], train.warmup_updates, train.dropout, train.max_epoch) == (lr, warmup, dropout, epochs)
        assert train.adam_betas == "(0.9, 0.98)" and train.label_smoothing == 0.1 and train.bf16 and not train.fp16
        assert train.lr_scheduler == "inverse_sqrt" and train.share_all_embeddings


@pytest.mark.parametrize("method", PAPER_METHODS)
@pytest.mark.parametrize("task", MULTI30K_TASKS)
def test_multi30k_dry_run_parses_on_cpu(task: str, method: str) -> None:
    parsed = check_commands(dry_run(task, method, "6", env={"NGPUS": "0"}))
    train = parsed["fairseq-train"][-1]
    assert train.cpu and not train.fp16 and train.update_freq == [1]
    generate = parsed["fairseq-generate"][0]
    assert generate.cpu and generate.post_process == "sentencepiece"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_run_sh_trains_every_method_of_the_registry_with_its_flags(method: str) -> None:
    """recipes/run.sh's methods are the registry's: the same init type and flags, and no other method."""
    commands = dry_run("multi30k", method, "6", env={"NGPUS": "0"})
    train = next(c for c in reversed(commands) if c[0] == "fairseq-train")
    assert train[train.index("--init-type") + 1] == METHODS[method].init_type
    for flag in ("--encoder-normalize-before", "--decoder-normalize-before"):
        assert (flag in train) == (flag in METHODS[method].flags), train
    case = RUN.read_text().split("case $METHOD in", 1)[1].split("    *)", 1)[0]
    listed = {name.strip() for line in case.splitlines() if ")" in line for name in line.split(")")[0].split("|")}
    assert listed == set(METHODS)
    assert {p.stem for p in (REPO / "fairseq_admin_tools" / "hydra" / "method").glob("*.yaml")} == set(METHODS)


@pytest.mark.parametrize("method", ["admin-closed-form", "deepnorm", "rezero"])
def test_comparator_methods_train_with_their_init_type_and_no_profile(method: str) -> None:
    commands = dry_run("multi30k", method, "18", env={"NGPUS": "0"})
    parsed = check_commands(commands)
    (train,) = parsed["fairseq-train"]  # no profiling run
    assert train.init_type == method and not train.encoder_normalize_before and train.encoder_layers == 18


def test_multi30k_paper_init_and_epoch_checkpoints() -> None:
    """PAPER_INIT=1: the paper's init and profiling; SAVE_INTERVAL_UPDATES=0 / MAX_UPDATE=0: epochs decide."""
    env = {"NGPUS": "0", "PAPER_INIT": "1", "SAVE_INTERVAL_UPDATES": "0", "MAX_UPDATE": "0"}
    parsed = check_commands(dry_run("multi30k", "admin", "18", env=env))
    profile, train = parsed["fairseq-train"]
    assert profile.ffn_init == train.ffn_init == "xavier"
    assert profile.admin_profile_padding == train.admin_profile_padding == "include"
    assert profile.admin_profile_tokens == 1 and train.max_update == 0 and train.save_interval_updates == 0
    average = next(c for c in dry_run("multi30k", "admin", "18", env=env) if c[0] == "fairseq-admin-average")
    assert "--num-epoch-checkpoints" in average and "--num-update-checkpoints" not in average
    default = check_commands(dry_run("multi30k", "admin", "18", env={"NGPUS": "0"}))["fairseq-train"][-1]
    assert default.ffn_init == "default" and default.save_interval_updates == 50


@pytest.mark.parametrize("args,env,message", [
    (["nosuchtask", "admin", "6"], {}, "unknown task"),
    (["multi30k", "fixup", "6"], {}, "unknown method"),
    (["multi30k", "admin", "six"], {}, "LAYERS must look like"),
    (["multi30k", "admin", "0"], {}, "at least 1"),
    (["multi30k", "admin", "6", "deploy"], {}, "unknown stage"),
    (["multi30k", "admin"], {}, "expected TASK METHOD LAYERS"),
    (["multi30k", "admin", "6"], {"PIPELINE": "bpe"}, "PIPELINE=bpe is for the paper's tasks"),
    (["iwslt14_de_en", "admin", "6"], {"PIPELINE": "moses"}, "PIPELINE must be bpe or spm"),
    (["iwslt14_de_en", "admin", "6"], {"SEEDS": "1111 two"}, "seeds must be integers"),
    (["iwslt14_de_en", "admin", "6"], {"NGPUS": "8", "NNODES": "2", "NODE_RANK": "2"}, "NODE_RANK must be 0..1"),
    (["iwslt14_de_en", "admin", "6"], {"NGPUS": "8", "NNODES": "2", "LAUNCHER": "spawn"}, "runs on one node"),
    (["iwslt14_de_en", "admin", "6"], {"NGPUS": "0", "NNODES": "2"}, "needs GPUs"),
])
def test_bad_arguments_give_one_error_line(args: list[str], env: dict, message: str) -> None:
    result = subprocess.run(["bash", str(RUN), "--dry-run", *args], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, **env})
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr and result.stdout == ""


def test_our_clis_reject_bad_input(tmp_path: Path) -> None:
    average = subprocess.run([str(BIN / "fairseq-admin-average"), "--inputs", str(tmp_path / "none"),
                              "--output", str(tmp_path / "avg.pt")], capture_output=True, text=True)
    errors = [line for line in average.stderr.splitlines() if "error" in line]
    assert average.returncode != 0 and errors == [errors[0]] and "does not exist" in errors[0]
    evaluate = subprocess.run([str(BIN / "fairseq-admin-evaluate"), "--output", str(tmp_path / "r.json"),
                               "--reference", str(tmp_path / "none.txt"), "--", "data"], capture_output=True, text=True)
    assert evaluate.returncode != 0 and "reference file" in evaluate.stderr and not (tmp_path / "r.json").exists()


def test_tokenized_bleu_splits_compounds_as_fairseq() -> None:
    from fairseq_admin_tools.evaluate import score, tokenized

    split = "Ein Zwei ##AT##-##AT## Wege ##AT##-##AT## Test , 3 - 4 mal ."  # 13a splits digit-dash itself
    assert tokenized(["Ein Zwei-Wege-Test, 3-4 mal."], True) == [split]
    assert tokenized(["Ein Zwei-Wege-Test."], False) == ["Ein Zwei-Wege-Test ."]
    line = "Das ist ein langer Zwei-Wege-Test für alle."  # at least four tokens: BLEU needs 4-grams
    perfect = score([line], [line], compound_split=True)
    assert perfect["sacrebleu"]["score"] == perfect["tokenized_bleu"]["score"] == 100.0
    assert perfect["sacrebleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_corpus_cleaning_iwslt14_layout(tmp_path: Path) -> None:
    """fairseq-admin-corpus --pipeline raw (for sentencepiece) on files laid out as in IWSLT'14's de-en.tgz:
    markup out, valid split, test sets. (The Moses pipeline: tests/test_paper_pipelines.py.)"""
    base = tmp_path / "downloads" / "de-en"
    base.mkdir(parents=True)
    de = ["<url>http://x</url>", "<talkid>1</talkid>", "<title>Ein Titel</title>"]
    en = ["<url>http://x</url>", "<talkid>1</talkid>", "<title>A title</title>"]
    de += [f"Satz Nummer {i} ." for i in range(46)] + ["viel zu lang " * 100]
    en += [f"Sentence number {i} ." for i in range(46)] + ["short"]
    (base / "train.tags.de-en.de").write_text("\n".join(de) + "\n")
    (base / "train.tags.de-en.en").write_text("\n".join(en) + "\n")
    for name in ("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012"):
        for lang, text in (("de", "Hallo Welt"), ("en", "Hello World")):
            (base / f"IWSLT14.{name}.de-en.{lang}.xml").write_text(
                f'<doc docid="1">\n<seg id="1"> {text} {name} </seg>\n<seg id="2">{text}’s</seg>\n</doc>\n')
    dest = tmp_path / "raw"
    run = [str(BIN / "fairseq-admin-corpus"), "iwslt14_de_en", "--downloads", str(tmp_path / "downloads"),
           "--dest", str(dest), "--pipeline", "raw"]
    built = subprocess.run(run, check=True, capture_output=True, text=True)
    assert "corpus de-en: train pairs" in built.stderr and "pairs" in built.stderr  # progress: count and rate
    train_en = (dest / "train.en").read_text().splitlines()
    valid_en = (dest / "valid.en").read_text().splitlines()
    test_en = (dest / "test.en").read_text().splitlines()
    assert train_en[0] == "a title" and "sentence number 21 ." in valid_en  # lowercased; every 23rd kept pair
    assert len(train_en) + len(valid_en) == 47 and len(valid_en) == 2  # title + 46; the long pair dropped
    assert test_en[:2] == ["hello world ted.dev2010", "hello world's"] and len(test_en) == 10
    assert (dest / "test.de").read_text().splitlines()[0] == "hallo welt ted.dev2010"
    again = subprocess.run(run, check=True, capture_output=True, text=True)
    assert "complete" in again.stdout
    missing = subprocess.run([*run[:2], "--downloads", str(tmp_path / "none"), "--dest", str(tmp_path / "other")],
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "not found" in missing.stderr


@pytest.mark.slow
def test_multi30k_recipe_end_to_end_tiny(tmp_path: Path) -> None:
    """prepare → profile → train → average → generate → BLEU JSON, on 100 pairs and a 2-layer model."""
    if not MULTI30K.is_dir():
        pytest.fail(f"Multi30k not found at {MULTI30K}; set MULTI30K_DIR")
    # 100 pairs in batches of 512 tokens: 3 updates, a checkpoint after each, the last 2 averaged.
    env = {**os.environ, "ADMIN_WORK": str(tmp_path / "work"), "RESULTS_DIR": str(tmp_path / "results"),
           "MULTI30K_DIR": str(MULTI30K), "MAX_TRAIN_PAIRS": "100", "SPM_VOCAB": "500", "MAX_EPOCH": "1",
           "MAX_TOKENS": "512", "EFFECTIVE_TOKENS": "512", "AVG_LAST": "2", "SAVE_INTERVAL_UPDATES": "1",
           "TRAIN_ARGS": "--max-valid-steps 1", "GENERATE_ARGS": "--max-len-a 0 --max-len-b 5",
           "NGPUS": "0", "OMP_NUM_THREADS": "2", "TENSORBOARD_DIR": str(tmp_path / "tb")}
    result = subprocess.run(["bash", str(RUN), "multi30k", "admin", "2"], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    # Progress of the long steps: encoding (a total, so time left), decoding (sentences of 1000), averaging.
    assert re.search(r"sentencepiece train\.de: 100%.*100/100", result.stderr), result.stderr[-3000:]
    assert re.search(r"fairseq-generate: 100%.*1000/1000", result.stderr), result.stderr[-3000:]
    assert re.search(r"average: 100%.*2/2", result.stderr), result.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "multi30k_de_en-admin-2L-2L-s1111.json").read_text())
    assert record["sentences"] == 1000
    assert record["sacrebleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert 0 <= record["sacrebleu"]["score"] <= 100 and 0 <= record["tokenized_bleu"]["score"] <= 100
    hypotheses = Path(record["hypotheses"]).read_text().splitlines()
    assert len(hypotheses) == 1000
    save_dir = tmp_path / "work" / "checkpoints" / "multi30k_de_en-admin-2L-2L-s1111"
    assert (save_dir / "admin_profile.json").exists() and (save_dir / "checkpoint.avg2.pt").exists()
    # Logs beside the checkpoints, and fairseq's TensorBoard events under TENSORBOARD_DIR/RUN.
    assert "| INFO | fairseq_admin.profiling | admin: profiled" in (save_dir / "profile.log").read_text()
    assert "num_updates 3" in (save_dir / "train.log").read_text()
    assert sum(line.startswith("D-") for line in (save_dir / "generate-test.log").read_text().splitlines()) == 1000
    assert record["generate_log"] == str(save_dir / "generate-test.log")
    assert list((tmp_path / "tb" / "multi30k_de_en-admin-2L-2L-s1111").rglob("events.out.tfevents.*"))
    preprocess_log = (tmp_path / "work" / "data" / "multi30k_de_en" / "bin" / "preprocess.log").read_text()
    assert "[de] Dictionary: 504 types" in preprocess_log
    assert "prepare: fairseq-preprocess: [de] Dictionary: 504 types" in result.stdout
    # A second run finds every step done and runs nothing.
    again = subprocess.run(["bash", str(RUN), "multi30k", "admin", "2"], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    done = [line for line in again.stdout.splitlines() if line.startswith("# done:")]
    assert len(done) == 4, again.stdout  # profile, train, average, evaluate (prepare reports its own skips)


def test_prepare_splits_lines_on_newline_only(tmp_path: Path) -> None:
    """U+2028 and \\x0c inside a sentence stay in it (str.splitlines would cut both pairs in two)."""
    from fairseq_admin_tools.prepare import read_pairs

    de = ["ein Hund\u2028läuft", "zwei Katzen", "ein\x0cMann"]
    en = ["a dog\u2028runs", "two cats", "a\x0cman"]
    (tmp_path / "train.de").write_text("\n".join(de) + "\n", encoding="utf-8")
    (tmp_path / "train.en").write_text("\n".join(en) + "\n", encoding="utf-8")
    assert list(read_pairs(str(tmp_path), "train", "de", "en", None)) == list(zip(de, en, strict=True))


def test_corpus_takes_fairseq_preprocess_option_names(tmp_path: Path) -> None:
    """-s/-t/--destdir (conftest's data_dir prepares with them too); -s/-t must match the task."""
    result = subprocess.run([str(BIN / "fairseq-admin-corpus"), "wmt14_en_de", "--downloads", str(tmp_path),
                             "--destdir", str(tmp_path / "c"), "-s", "de", "-t", "en"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "-s de: wmt14_en_de translates en -> de" in result.stderr
    assert not (tmp_path / "c").exists()


def _result(results: Path, name: str, hypotheses: list[str], reference: Path) -> None:
    """A result as fairseq-admin-evaluate writes it (its own scoring code), for the summary to read."""
    from fairseq_admin_tools.evaluate import RESULT_FORMAT_VERSION, read_references, score

    (results / f"{name}.hyp.txt").write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
    record = {"format_version": RESULT_FORMAT_VERSION, "name": name, "reference": str(reference),
              "sentences": len(hypotheses), **score(hypotheses, read_references(str(reference)), False),
              "hypotheses": str(results / f"{name}.hyp.txt")}
    (results / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")


def test_summary_reads_every_method_and_tests_them_against_the_baseline(tmp_path: Path) -> None:
    references = [f"a man number {i} rides a red bike down the road" for i in range(60)]
    reference = tmp_path / "test.raw.en"
    reference.write_text("".join(r + "\n" for r in references), encoding="utf-8")
    results = tmp_path / "results"
    results.mkdir()
    good = list(references)
    close = [r.replace("red", "blue") if i % 3 == 0 else r for i, r in enumerate(references)]
    poor = [" ".join(r.split()[:4]) for r in references]
    for method, hypotheses in (("postln", poor), ("admin-closed-form", good), ("deepnorm", close)):
        _result(results, f"multi30k_de_en-{method}-6L-6L-s1111", hypotheses, reference)
    summary_json = tmp_path / "summary.json"
    out = subprocess.run([str(BIN / "fairseq-admin-summary"), str(results), "--json", str(summary_json)],
                         capture_output=True, text=True, check=True).stdout
    summary = json.loads(summary_json.read_text())
    assert sorted(row["method"] for row in summary["summary"]) == ["admin-closed-form", "deepnorm", "postln"]
    assert all(row["chrf_mean"] is not None for row in summary["summary"])
    tests = {row["method"]: row for row in summary["paired_bootstrap"]}
    assert sorted(tests) == ["admin-closed-form", "deepnorm"] and {r["baseline"] for r in tests.values()} == {"postln"}
    assert tests["admin-closed-form"]["bleu"] == 100.0 and tests["admin-closed-form"]["bleu_p"] < 0.01
    assert tests["deepnorm"]["chrf"] < tests["admin-closed-form"]["chrf"] and tests["deepnorm"]["chrf_p"] < 0.01
    assert "paired bootstrap" in out and "deepnorm vs postln" in out and "skipped" not in out
