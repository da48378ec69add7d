"""A deterministic toy bilingual corpus (zh + en) and a multiple-choice test answerable from it.

Regular enough that a tiny model learns it in minutes on a CPU: templated facts ("The capital of France is
Paris." / "法国的首都是巴黎。"), arithmetic ("3 + 4 = 7"), short templated stories, and question/answer documents in
the evaluation prompt's wording ("What is the capital of France?\nAnswer: Paris"). A few planted exact
and near duplicates and dirty documents (too short, URL spam, an e-mail to mask) give clean and dedup something
visible to do; `_synth.json` maps each planted id to its original (copies come after their originals, so
dedup, which keeps the first document of a cluster, removes the copies). The multiple-choice set uses MMLU's CSV layout
(header-less `question,A,B,C,D,answer`) in `mc/{dev,test}/toyfacts_{dev,test}.csv`; its questions ask for the
corpus's capitals with options in new orders and combinations.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

from llmctl.core.io import atomic_file, write_json_atomic

COUNTRIES = [  # (en country, en capital, zh country, zh capital)
    ("France", "Paris", "法国", "巴黎"),
    ("Japan", "Tokyo", "日本", "东京"),
    ("China", "Beijing", "中国", "北京"),
    ("Germany", "Berlin", "德国", "柏林"),
    ("Italy", "Rome", "意大利", "罗马"),
    ("Spain", "Madrid", "西班牙", "马德里"),
    ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("Egypt", "Cairo", "埃及", "开罗"),
    ("Canada", "Ottawa", "加拿大", "渥太华"),
    ("Brazil", "Brasilia", "巴西", "巴西利亚"),
    ("India", "New Delhi", "印度", "新德里"),
    ("Australia", "Canberra", "澳大利亚", "堪培拉"),
    ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Greece", "Athens", "希腊", "雅典"),
    ("Norway", "Oslo", "挪威", "奥斯陆"),
    ("Peru", "Lima", "秘鲁", "利马"),
    ("Thailand", "Bangkok", "泰国", "曼谷"),
    ("Mexico", "Mexico City", "墨西哥", "墨西哥城"),
    ("Turkey", "Ankara", "土耳其", "安卡拉"),
    ("Poland", "Warsaw", "波兰", "华沙"),
    ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"),
    ("Vietnam", "Hanoi", "越南", "河内"),
    ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"),
    ("Portugal", "Lisbon", "葡萄牙", "里斯本"),
]
ANIMALS = [
    ("cat", "猫"),
    ("dog", "狗"),
    ("rabbit", "兔子"),
    ("fox", "狐狸"),
    ("bear", "熊"),
    ("owl", "猫头鹰"),
    ("horse", "马"),
    ("duck", "鸭子"),
]
ADJS = [
    ("little", "小小"),
    ("brave", "勇敢"),
    ("clever", "聪明"),
    ("happy", "快乐"),
    ("sleepy", "困倦"),
    ("kind", "善良"),
]
PLACES = [
    ("forest", "森林里"),
    ("village", "村子里"),
    ("garden", "花园里"),
    ("river bank", "河边"),
    ("mountain", "山上"),
]
ACTS = [
    ("sang a song", "唱一首歌"),
    ("ate an apple", "吃一个苹果"),
    ("read a book", "读一本书"),
    ("ran to the river", "跑到河边"),
    ("planted a flower", "种一朵花"),
]
MAX_OPERAND = 20


def _fact_en(r: random.Random) -> str:
    picks = r.sample(COUNTRIES, r.randint(3, 5))
    return " ".join(f"The capital of {c} is {cap}." for c, cap, _zc, _zcap in picks)


def _fact_zh(r: random.Random) -> str:
    picks = r.sample(COUNTRIES, r.randint(3, 5))
    return "".join(f"{zc}的首都是{zcap}。" for _c, _cap, zc, zcap in picks)


def _pairs(r: random.Random) -> list[tuple[int, int]]:
    return r.sample([(a, b) for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1)], r.randint(3, 5))


def _arith_en(r: random.Random) -> str:
    return " ".join(f"What is {a} + {b}? The answer is {a} + {b} = {a + b}." for a, b in _pairs(r))


def _arith_zh(r: random.Random) -> str:
    return "".join(
        f"{a}加{b}等于多少？我们来算一算：{a} + {b} = {a + b}。所以答案是{a + b}。" for a, b in _pairs(r)
    )


def _story_en(r: random.Random) -> str:
    (adj, _), (animal, _), (place, _), (act, _) = (
        r.choice(ADJS),
        r.choice(ANIMALS),
        r.choice(PLACES),
        r.choice(ACTS),
    )
    friend = r.choice([a for a in ANIMALS if a[0] != animal])[0]
    return (
        f"Once upon a time, a {adj} {animal} lived in the {place}. Every morning the {animal} {act}. "
        f"One day the {animal} met a {friend}, and they became good friends. The end."
    )


def _story_zh(r: random.Random) -> str:
    (_, adj), (_, animal), (_, place), (_, act) = (
        r.choice(ADJS),
        r.choice(ANIMALS),
        r.choice(PLACES),
        r.choice(ACTS),
    )
    friend = r.choice([a for a in ANIMALS if a[1] != animal])[1]
    return f"从前，{place}住着一只{adj}的{animal}。每天早上，{animal}都会{act}。有一天，{animal}遇到了一只{friend}，它们成了好朋友。完。"


def _mc_row(r: random.Random, zh: int) -> list[str]:
    """One four-choice question on a capital from the corpus (English, or Chinese when `zh`), MMLU row layout."""
    c, cap, zc, zcap = r.choice(COUNTRIES)
    column, right = (3, zcap) if zh else (1, cap)
    wrong = r.sample([x[column] for x in COUNTRIES if x[column] != right], 3)
    options = wrong + [right]
    r.shuffle(options)
    return [f"{zc}的首都是哪里？" if zh else f"What is the capital of {c}?", *options, "ABCD"[options.index(right)]]


def _mc_rows(r: random.Random, n: int) -> list[list[str]]:
    return [_mc_row(r, i % 2) for i in range(n)]


# Question/answer documents in the wording the evaluation prompts use (MMLU's header, whose official form has
# two spaces before the subject, and "Answer:"), so what the model learned from the facts can be measured on
# the multiple-choice set in the cloze formulation (`llmctl eval run --mode cloze`).
QA_HEADER = "The following are multiple choice questions (with answers) about  toyfacts.\n\n"


def _qa(r: random.Random) -> str:
    rows = [_mc_row(r, r.randrange(2)) for _ in range(r.randint(3, 5))]
    return QA_HEADER + "".join(f"{q}\nAnswer: {opts['ABCD'.index(ans)]}\n\n" for q, *opts, ans in rows)


GENERATORS = [
    ("en", _fact_en),
    ("zh", _fact_zh),
    ("en", _arith_en),
    ("zh", _arith_zh),
    ("en", _story_en),
    ("zh", _story_zh),
    ("en", _qa),
    ("en", _qa),
]


def _write_ultrafineweb(out: Path, records: list[dict[str, str]], r: random.Random) -> Path:
    """The shape of Ultra-FineWeb as lab 1 meets it: `ultrafineweb/{zh,en}/part-0000N.parquet`, columns
    `content` and `score` (a quality score in [0, 1]). Regular documents score 0.3-1.0 and the planted dirty
    ones below 0.2, so `llmctl data sample --min-score-zh/--min-score-en 0.5` visibly drops rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmctl.core.io import atomic_path

    root = out / "ultrafineweb"
    for lang in ("zh", "en"):
        rows = [rec for rec in records if rec["lang"] == lang]
        scores = [round(r.uniform(0.0, 0.2) if rec["id"].startswith("dirty-") else r.uniform(0.3, 1.0), 4)
                  for rec in rows]
        for k in range(UFW_FILES_PER_LANG):
            part = slice(k * len(rows) // UFW_FILES_PER_LANG, (k + 1) * len(rows) // UFW_FILES_PER_LANG)
            table = pa.table({"content": [rec["text"] for rec in rows[part]], "score": scores[part]})
            path = root / lang / f"part-{k:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
    return root


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


LAYOUTS = ("jsonl", "ultrafineweb")
#: Parquet files per language folder in the ultrafineweb layout (so sampling and tokenizing see several).
UFW_FILES_PER_LANG = 2


def synth_corpus(out_dir: str | Path, docs: int = 2000, seed: int = 0, mc_test: int = 60,
                 layout: str = "jsonl") -> dict[str, Any]:
    """Write the corpus, the MC set and `_synth.json`; returns the summary. `layout` "jsonl" writes
    `corpus.jsonl` (id, text, lang); "ultrafineweb" writes the tree the course lab samples from (see
    `_write_ultrafineweb`)."""
    r = random.Random(seed)
    out = Path(out_dir)
    records: list[dict[str, str]] = []
    for i in range(docs):
        lang, gen = GENERATORS[i % len(GENERATORS)]
        records.append({"id": f"toy-{i:06d}", "text": gen(r), "lang": lang})
    # order: regular documents as generated; each planted copy lands somewhere after its original (so dedup,
    # which keeps the first of a cluster, removes the copy); dirty documents anywhere
    keyed: list[tuple[float, dict[str, str]]] = [(float(i), rec) for i, rec in enumerate(records)]
    planted: dict[str, dict[str, str]] = {"exact_duplicates": {}, "near_duplicates": {}, "dirty": {}}

    def plant(kind: str, src: int, rec: dict[str, str]) -> None:
        keyed.append((r.uniform(src + 0.01, docs), rec))
        planted[kind][rec["id"]] = records[src]["id"]

    for k, src in enumerate(r.sample(range(docs), min(5, docs))):
        plant(
            "exact_duplicates",
            src,
            {"id": f"dup-exact-{k}", "text": records[src]["text"], "lang": records[src]["lang"]},
        )
    # near duplicates of the longer documents (arithmetic, stories): one extra word at the end, Jaccard > 0.95
    en = [i for i in range(docs) if i % len(GENERATORS) in (2, 4)]
    for k, src in enumerate(r.sample(en, min(3, len(en)))):
        plant(
            "near_duplicates",
            src,
            {"id": f"dup-near-{k}", "text": records[src]["text"] + " Really.", "lang": "en"},
        )
    zh = [i for i in range(docs) if i % len(GENERATORS) in (3, 5)]
    for k, src in enumerate(r.sample(zh, min(2, len(zh)))):
        plant(
            "near_duplicates",
            src,
            {"id": f"dup-near-zh-{k}", "text": records[src]["text"] + "好。", "lang": "zh"},
        )
    dirty = [
        ("dirty-short-en", "ok", "en"),
        ("dirty-short-zh", "哈哈", "zh"),
        (
            "dirty-url-spam",
            " ".join(f"Best deals http://spam.example.com/p{j}?ref=x" for j in range(8)),
            "en",
        ),
        (
            "dirty-email",
            "For questions about the capital of France, write to alice.smith@example.com today.",
            "en",
        ),
        ("dirty-phone-zh", "关于法国的首都是巴黎这个问题，请致电13812345678咨询。", "zh"),
    ]
    for id_, text, lang in dirty:
        keyed.append((r.uniform(0, docs), {"id": id_, "text": text, "lang": lang}))
        planted["dirty"][id_] = "short" if "short" in id_ else id_.split("-", 1)[1]
    records = [rec for _key, rec in sorted(keyed, key=lambda kv: kv[0])]
    out.mkdir(parents=True, exist_ok=True)
    if layout == "ultrafineweb":
        corpus = _write_ultrafineweb(out, records, r)
    else:
        corpus = out / "corpus.jsonl"
        with atomic_file(corpus) as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    mc = {"dev": _mc_rows(r, 5), "test": _mc_rows(r, mc_test)}
    for split, rows in mc.items():
        with atomic_file(out / "mc" / split / f"toyfacts_{split}.csv") as f:
            f.write(_csv_text(rows))
    summary = {
        "docs": len(records),
        "seed": seed,
        "corpus": str(corpus),
        "layout": layout,
        "mc": {s: str(out / "mc" / s / f"toyfacts_{s}.csv") for s in mc},
        "planted": planted,
        "bytes": sum(len(x["text"].encode()) for x in records),
    }
    write_json_atomic(out / "_synth.json", summary)
    return summary
