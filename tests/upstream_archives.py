"""Small stand-ins for the IWSLT'14 / WMT'14 archives, with the upstream layouts and member names, made
from real Multi30k text, so every stage of the paper's pipelines runs in CI without downloading.

Each archive goes where ``recipes/run.sh``'s download step would put it (``$ADMIN_WORK/downloads/...``),
so that step finds it and skips the download. A few lines carry what the original's cleaning and
normalization must deal with (TED metadata, too long / unbalanced pairs, typographic quotes, hyphenated
compounds, a zero-width space); :data:`MARKERS` names them for the tests.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

# Special pairs put into every training corpus (source side, target side); the tests look for them.
MARKERS = {
    # 200 words each side: over every task's maximum (IWSLT 175, En-De 80, En-Fr 250 BPE tokens ≥ words)
    "too_long": ("lang " * 260 + "ende", "long " * 260 + "end"),
    # 6 vs 1 words: ratio 6 is over IWSLT's / En-Fr's 1.5 but under clean-corpus-n's default 9 (En-De)
    "ratio_six": ("Das ist ein Satz mit sechs", "Sixwords"),
    # 12 vs 1 words: over 9 as well
    "ratio_twelve": ("eins zwei drei vier fünf sechs sieben acht neun zehn elf zwölf", "Twelve"),
    # typographic quotes, a hyphenated compound, a zero-width space (Unicode Cf) and an ampersand
    "normalize": ("„Ein Zwei-Wege-Test\u200bfür Tom & Jerry“ .", "“A two-way test\u200bfor Tom & Jerry” ."),
}


def archive_lines(path: Path, count: int, start: int = 0) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f][start:start + count]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _with_markers(src: list[str], tgt: list[str], every: int = 37) -> tuple[list[str], list[str]]:
    """Interleave the marker pairs and one empty pair into real sentence pairs."""
    src, tgt = list(src), list(tgt)
    specials = [*MARKERS.values(), ("", "")]
    for i, (s, t) in enumerate(specials):
        at = min(len(src), (i + 1) * every)
        src.insert(at, s)
        tgt.insert(at, t)
    return src, tgt


def _xml(lines: list[str], name: str, lang: str, is_ref: bool) -> bytes:
    """An IWSLT'14 dev/test xml file: one talk, its metadata, then <seg id="N"> lines."""
    kind = "refset" if is_ref else "srcset"
    target = ' trglang="english"' if is_ref else ""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<mteval>",
           f'<{kind} setid="iwslt2014-{name}" srclang="german"{target}>',
           '<doc docid="535" genre="lectures">', "<url>http://www.ted.com/talks/x.html</url>",
           f"<description>TED Talk Subtitles and Transcript ({lang})</description>", "<keywords>talks</keywords>",
           "<talkid>535</talkid>", "<title>A talk</title>"]
    out += [f'<seg id="{i}"> {line} </seg>' for i, line in enumerate(lines, start=1)]
    out += ["</doc>", f"</{kind}>", "</mteval>"]
    return _text(out)


def _sgm(lines: list[str], lang: str, is_ref: bool) -> bytes:
    """A WMT'14 test-full SGML file."""
    head = (f'<refset setid="newstest2014" srclang="any" trglang="{lang}">' if is_ref
            else '<srcset setid="newstest2014" srclang="any">')
    out = [head, '<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">', "<p>"]
    out += [f'<seg id="{i}">{line}</seg>' for i, line in enumerate(lines, start=1)]
    out += ["</p>", "</doc>", "</refset>" if is_ref else "</srcset>"]
    return _text(out)


def iwslt14(multi30k: Path, downloads: Path, train_pairs: int = 400, test_per_set: int = 6) -> Path:
    """``downloads/iwslt14/de-en.tgz`` as wit3 / fairseq's mirror has it."""
    de, en = _with_markers(archive_lines(multi30k / "train.de.gz", train_pairs),
                           archive_lines(multi30k / "train.en.gz", train_pairs))
    talk = 25
    tags = {"de": [], "en": []}
    for number, start in enumerate(range(0, len(de), talk)):
        for lang, side in (("de", de), ("en", en)):
            tags[lang] += [f"<url>http://www.ted.com/talks/talk_{number}.html</url>",
                           "<keywords>talks, science, technology</keywords>",
                           f"<speaker>Speaker {number}</speaker>", f"<talkid>{number}</talkid>",
                           f"<title>Talk {number} ({lang})</title>",
                           f"<description>TED Talk Subtitles and Transcript: talk {number} ({lang})</description>"]
            tags[lang] += side[start:start + talk]
    archive = downloads / "iwslt14" / "de-en.tgz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    val_de, val_en = (archive_lines(multi30k / f"val.{lang}.gz", 5 * test_per_set) for lang in ("de", "en"))
    val_en[0] = val_en[0].replace("'", "\u2019") + " It\u2019s"  # the original turns ’ into ' in test sets
    with tarfile.open(archive, "w:gz") as tar:
        for lang in ("de", "en"):
            _add(tar, f"de-en/train.tags.de-en.{lang}", _text(tags[lang]))
        for i, name in enumerate(("TED.dev2010", "TEDX.dev2012", "TED.tst2010", "TED.tst2011", "TED.tst2012")):
            part = slice(i * test_per_set, (i + 1) * test_per_set)
            _add(tar, f"de-en/IWSLT14.{name}.de-en.de.xml", _xml(val_de[part], name, "de", is_ref=False))
            _add(tar, f"de-en/IWSLT14.{name}.de-en.en.xml", _xml(val_en[part], name, "en", is_ref=True))
        _add(tar, "de-en/README", b"IWSLT 2014 German-English (stand-in)\n")
    return archive


def wmt14(multi30k: Path, downloads: Path, task: str, pairs_per_corpus: int = 120, test_size: int = 20,
          giga_pairs: int = 0) -> list[Path]:
    """The WMT'14 archives ``recipes/<task>/config.sh`` downloads, into ``downloads/wmt14``."""
    tgt = task.split("_")[-1]
    pair = f"{tgt}-en"
    root = downloads / "wmt14"
    root.mkdir(parents=True, exist_ok=True)
    offset = 0

    def corpus(count: int) -> tuple[list[str], list[str]]:
        nonlocal offset
        en = archive_lines(multi30k / "train.en.gz", count, offset)
        other = archive_lines(multi30k / f"train.{tgt}.gz", count, offset)
        offset += count
        other_m, en_m = _with_markers(other, en)
        return en_m, other_m

    def members(stem: str, count: int) -> dict[str, bytes]:
        en, other = corpus(count)
        return {f"{stem}.en": _text(en), f"{stem}.{tgt}": _text(other)}

    archives: dict[str, dict[str, bytes]] = {
        "training-parallel-europarl-v7.tgz": members(f"training/europarl-v7.{pair}", pairs_per_corpus),
        "training-parallel-commoncrawl.tgz": members(f"commoncrawl.{pair}", pairs_per_corpus),
    }
    test_en = archive_lines(multi30k / "test_2016_flickr.en.gz", test_size)
    test_other = archive_lines(multi30k / f"test_2016_flickr.{tgt}.gz", test_size)
    code = f"{tgt}en"
    archives["test-full.tgz"] = {
        f"test-full/newstest2014-{code}-src.en.sgm": _sgm(test_en, "en", is_ref=False),
        f"test-full/newstest2014-{code}-ref.{tgt}.sgm": _sgm(test_other, tgt, is_ref=True),
    }
    if task == "wmt14_en_de":
        archives["training-parallel-nc-v12.tgz"] = members("training/news-commentary-v12.de-en", pairs_per_corpus)
        dev_en, dev_de = archive_lines(multi30k / "val.en.gz", 40), archive_lines(multi30k / "val.de.gz", 40)
        archives["dev.tgz"] = {"dev/newstest2013.en": _text(dev_en), "dev/newstest2013.de": _text(dev_de),
                               "dev/newstest2013-src.en.sgm": _sgm(dev_en, "en", is_ref=False)}
    else:
        archives["training-parallel-un.tgz"] = members("un/undoc.2000.fr-en", pairs_per_corpus)
        archives["training-parallel-nc-v9.tgz"] = members("training/news-commentary-v9.fr-en", pairs_per_corpus)
        en, fr = corpus(giga_pairs)
        archives["training-giga-fren.tar"] = {  # a plain tar of two gzipped files
            "giga-fren.release2.fixed.en.gz": gzip.compress(_text(en)),
            "giga-fren.release2.fixed.fr.gz": gzip.compress(_text(fr)),
        }
    paths = []
    for name, files in archives.items():
        path = root / name
        with tarfile.open(path, "w" if name.endswith(".tar") else "w:gz") as tar:
            for member, data in files.items():
                _add(tar, member, data)
        paths.append(path)
    return paths
