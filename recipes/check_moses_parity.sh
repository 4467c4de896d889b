#!/usr/bin/env bash
# Compare `fairseq-admin-corpus TASK --pipeline moses` with the original's perl pipeline, split by split.
#
#   recipes/check_moses_parity.sh MOSES_SCRIPTS TASK DOWNLOADS OURS [TMP]
#
#   MOSES_SCRIPTS  the scripts/ directory of a mosesdecoder checkout (tokenizer/, training/, share/)
#   TASK           iwslt14_de_en | wmt14_en_de | wmt14_en_fr
#   DOWNLOADS      the unpacked archives (work/downloads/iwslt14 or work/downloads/wmt14)
#   OURS           fairseq-admin-corpus's output directory (work/data/TASK/moses)
#
# Runs the commands of Transformer-Clinic's pre-process/{iwslt14de-en,wmt14en-de,wmt14en-fr}.sh up to the
# point before BPE (the same greps, seds, perl scripts and awk splits) into TMP and reports, for each of
# train/valid/test and each language, whether the two files are byte-identical (else the first differences).
# Exit status 1 if any differ.
set -euo pipefail
(( $# >= 4 )) || { sed -n '2,/^set/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
S=$1 TASK=$2 ORIG=$3 OURS=$4 TMP=${5:-$(mktemp -d)}
TOK=$S/tokenizer/tokenizer.perl LC=$S/tokenizer/lowercase.perl CLEAN=$S/training/clean-corpus-n.perl
NORM=$S/tokenizer/normalize-punctuation.perl REM=$S/tokenizer/remove-non-printing-char.perl
mkdir -p "$TMP"

case $TASK in
    iwslt14_de_en)
        src=de tgt=en lang=de-en
        for l in $src $tgt; do
            grep -v '<url>' "$ORIG/$lang/train.tags.$lang.$l" | grep -v '<talkid>' | grep -v '<keywords>' |
                sed -e 's/<title>//g' -e 's/<\/title>//g' -e 's/<description>//g' -e 's/<\/description>//g' |
                perl "$TOK" -threads 8 -l $l > "$TMP/train.tags.$lang.tok.$l" 2>/dev/null
        done
        perl "$CLEAN" -ratio 1.5 "$TMP/train.tags.$lang.tok" $src $tgt "$TMP/train.tags.$lang.clean" 1 175 2>/dev/null
        for l in $src $tgt; do
            perl "$LC" < "$TMP/train.tags.$lang.clean.$l" > "$TMP/train.tags.$lang.$l"
            for name in TED.dev2010 TEDX.dev2012 TED.tst2010 TED.tst2011 TED.tst2012; do
                grep '<seg id' "$ORIG/$lang/IWSLT14.$name.$lang.$l.xml" | sed -e 's/<seg id="[0-9]*">\s*//g' |
                    sed -e 's/\s*<\/seg>\s*//g' | sed -e "s/\’/\'/g" | perl "$TOK" -threads 8 -l $l 2>/dev/null |
                    perl "$LC"
            done > "$TMP/test.$l"
            awk '{if (NR%23 == 0)  print $0; }' "$TMP/train.tags.$lang.$l" > "$TMP/valid.$l"
            awk '{if (NR%23 != 0)  print $0; }' "$TMP/train.tags.$lang.$l" > "$TMP/train.$l"
        done
        ;;
    wmt14_en_de | wmt14_en_fr)
        src=en tgt=${TASK##*_} lang=en-${TASK##*_}
        if [[ $TASK == wmt14_en_de ]]; then
            corpora=(training/europarl-v7.de-en commoncrawl.de-en training/news-commentary-v12.de-en) code=deen
        else
            corpora=(training/europarl-v7.fr-en commoncrawl.fr-en un/undoc.2000.fr-en
                     training/news-commentary-v9.fr-en giga-fren.release2.fixed) code=fren
        fi
        for l in $src $tgt; do
            for f in "${corpora[@]}"; do
                if [[ -e $ORIG/$f.$l ]]; then cat "$ORIG/$f.$l"; else gzip -dc "$ORIG/$f.$l.gz"; fi |
                    perl "$NORM" $l | perl "$REM" | perl "$TOK" -threads 8 -a -l $l 2>/dev/null
            done > "$TMP/train.tags.$lang.tok.$l"
            if [[ $l == "$src" ]]; then t=src; else t=ref; fi
            grep '<seg id' "$ORIG/test-full/newstest2014-$code-$t.$l.sgm" | sed -e 's/<seg id="[0-9]*">\s*//g' |
                sed -e 's/\s*<\/seg>\s*//g' | sed -e "s/\’/\'/g" |
                perl "$TOK" -threads 8 -a -l $l > "$TMP/test.$l" 2>/dev/null
        done
        if [[ $TASK == wmt14_en_de ]]; then
            perl "$CLEAN" "$TMP/train.tags.$lang.tok" $src $tgt "$TMP/train" 1 80 2>/dev/null
            for l in $src $tgt; do
                perl "$NORM" $l < "$ORIG/dev/newstest2013.$l" | perl "$REM" |
                    perl "$TOK" -threads 8 -a -l $l > "$TMP/valid.$l" 2>/dev/null
            done
        else
            for l in $src $tgt; do
                awk '{if (NR%1333 == 0)  print $0; }' "$TMP/train.tags.$lang.tok.$l" > "$TMP/valid.$l"
                awk '{if (NR%1333 != 0)  print $0; }' "$TMP/train.tags.$lang.tok.$l" > "$TMP/train.$l"
            done
        fi
        ;;
    *) echo "check_moses_parity.sh: error: unknown task '$TASK'" >&2; exit 2 ;;
esac

status=0
for split in train valid test; do
    for l in $src $tgt; do
        if cmp -s "$TMP/$split.$l" "$OURS/$split.$l"; then
            echo "identical: $split.$l ($(wc -l < "$OURS/$split.$l") lines)"
        else
            status=1
            echo "DIFFERENT: $split.$l"
            diff "$TMP/$split.$l" "$OURS/$split.$l" | head -6 || true
        fi
    done
done
exit $status
