#!/usr/bin/env bash
# Peak memory of the WMT'14 En-Fr `prepare` stage (PIPELINE=bpe) on a large synthetic corpus laid out as the
# unpacked WMT'14 archives: shows that it streams (the peak does not grow with the number of lines).
#
#   recipes/measure_prepare_memory.sh [PAIRS] [WORKDIR]     (defaults: 600000 pairs, /tmp/enfr-memory)
#
# Builds PAIRS sentence pairs from Multi30k's En-Fr text ($MULTI30K_DIR), each line with one extra random word
# drawn from a pool of 200k per language (so the vocabulary grows as in real data), spread over the five En-Fr
# corpora (most in giga-fren's .gz files), then runs fairseq-admin-corpus and fairseq-admin-prepare under
# /usr/bin/time -v and prints their maximum resident set size. BPE_MERGES (default 10000) sets learn_bpe's merges.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
PAIRS=${1:-600000}
DIR=${2:-/tmp/enfr-memory}
WORKERS=${WORKERS:-2}
MERGES=${BPE_MERGES:-10000}
PY=$REPO/.venv/bin/python
[[ -x $PY ]] || PY=python3
export PATH=$REPO/.venv/bin:$PATH
rm -rf "$DIR" && mkdir -p "$DIR/downloads"

"$PY" - "$PAIRS" "$DIR/downloads" "${MULTI30K_DIR:-$REPO/../shared/data/multi30k}" <<'EOF'
import gzip, os, random, string, sys
pairs, root, multi30k = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def read(name):
    with gzip.open(os.path.join(multi30k, name), "rt", encoding="utf-8") as f:
        return f.read().splitlines()
en, fr = read("train.en.gz"), read("train.fr.gz")
rng = random.Random(1)
pool = {lang: ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 12))) for _ in range(200_000)]
        for lang in ("en", "fr")}
stems = ["training/europarl-v7.fr-en", "commoncrawl.fr-en", "un/undoc.2000.fr-en", "training/news-commentary-v9.fr-en"]
small = pairs // 20  # 5% in each of the four small corpora, the rest in giga-fren
plan = [(stem, small, False) for stem in stems] + [("giga-fren.release2.fixed", pairs - 4 * small, True)]
n = 0
for stem, count, gz in plan:
    os.makedirs(os.path.dirname(os.path.join(root, stem)) or root, exist_ok=True)
    files = {lang: (gzip.open if gz else open)(os.path.join(root, f"{stem}.{lang}" + (".gz" if gz else "")), "wt",
                                                 encoding="utf-8") for lang in ("en", "fr")}
    for _ in range(count):
        i = n % len(en)
        files["en"].write(f"{en[i]} {rng.choice(pool['en'])}\n")
        files["fr"].write(f"{fr[i]} {rng.choice(pool['fr'])}\n")
        n += 1
    for f in files.values():
        f.close()
os.makedirs(os.path.join(root, "test-full"), exist_ok=True)
for side, lang, lines in (("src", "en", en), ("ref", "fr", fr)):
    with open(os.path.join(root, f"test-full/newstest2014-fren-{side}.{lang}.sgm"), "w", encoding="utf-8") as f:
        f.write("<srcset>\n<doc>\n" + "".join(f'<seg id="{i}">{t}</seg>\n' for i, t in enumerate(lines[:3000], 1))
                + "</doc>\n</srcset>\n")
print(f"{n} pairs in {root}")
EOF
du -sh "$DIR/downloads"

measure() {  # measure NAME CMD...: run under /usr/bin/time -v, print wall time and peak RSS
    local name=$1
    shift
    /usr/bin/time -v "$@" >"$DIR/$name.out" 2>"$DIR/$name.time" || { tail -5 "$DIR/$name.time"; exit 1; }
    echo "$name: $(grep -E 'Maximum resident' "$DIR/$name.time" | sed 's/.*: //') kB peak RSS," \
         "$(grep -E 'Elapsed' "$DIR/$name.time" | sed 's/.*: //') wall"
}
measure corpus fairseq-admin-corpus wmt14_en_fr --pipeline moses --downloads "$DIR/downloads" --dest "$DIR/moses" \
    --workers "$WORKERS"
wc -l "$DIR/moses/train.en" "$DIR/moses/valid.en"
measure prepare fairseq-admin-prepare --pipeline bpe --raw-dir "$DIR/moses" --dest "$DIR/data" --src en --tgt fr \
    --bpe-merges "$MERGES" --clean-after-bpe 1-250:1.5 --splits train=train,valid=valid,test=test --workers "$WORKERS"
echo "(worker processes: /usr/bin/time reports the largest single process of the tree)"
