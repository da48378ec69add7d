"""PII masking (real-looking zh/en cases, no false positives) and the rule filters' per-language report."""

from __future__ import annotations

import json

import pytest
from data_helpers import read_jsonl, run_cli, write_jsonl

from llmctl.data.filters import build_rules
from llmctl.data.filters.pii import mask_pii


def cn_id(first17: str) -> str:
    """A resident ID number with a valid GB 11643 check digit."""
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return first17 + "10X98765432"[sum(int(a) * w for a, w in zip(first17, weights)) % 11]


PII_CASES = [
    ("联系邮箱：zhangsan@163.com。", "联系邮箱：<EMAIL>。", "email"),
    ("Email John.Doe+news@example.co.uk, thanks", "Email <EMAIL>, thanks", "email"),
    ("请拨打13812345678联系我", "请拨打<PHONE>联系我", "phone"),
    ("手机 +86 138-1234-5678 随时", "手机 <PHONE> 随时", "phone"),
    ("电话：139 0000 1111。", "电话：<PHONE>。", "phone"),
    ("座机 010-62345678 转 8", "座机 <PHONE> 转 8", "phone"),
    ("Call +1 (415) 555-2671 now", "Call <PHONE> now", "phone"),
    ("UK office +44 20 7946 0958.", "UK office <PHONE>.", "phone"),
    ("US: (415) 555-2671 or 415-555-2671", "US: <PHONE> or <PHONE>", "phone"),
    ("身份证号：" + cn_id("11010519491231002") + "，请核对", "身份证号：<ID_NUMBER>，请核对", "id_number"),
    ("id " + cn_id("44030419900307123").lower() + " on file", "id <ID_NUMBER> on file", "id_number"),
    ("server 192.168.1.20 is down", "server <IP> is down", "ip"),
    ("v6 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and fe80::1", "v6 <IP> and <IP>", "ip"),
    (
        "GET https://api.example.com/v1?user=bob&access_token=abc123XYZ&page=2",
        "GET https://api.example.com/v1?user=bob&access_token=<SECRET>&page=2",
        "secret",
    ),
    ("https://x.cn/a?api_key=sk-9f8e7d&lang=zh", "https://x.cn/a?api_key=<SECRET>&lang=zh", "secret"),
]

NOT_PII = [
    "会议于2023-10-01召开",
    "2023年10月1日上午",
    "at 12:30:45 today",
    "售价¥1,299.00元",
    "pi is 3.1415926",
    "born in 1999",
    "ISBN 978-7-111-54742-6",
    "订单号 20231001123456789",
    "population 1400000000 people",
    "Python 3.11.7",
    "version 1.2.3",
    "room 1203",
    "+5 points",
    "10.5% growth",
    "score 98.5 of 100",
    "std::vector<int>",
    "ratio 3:2",
    "手机号码长度为11位",
    "2024-01-15 08:30",
    "39.9042, 116.4074",
    "3 + 4 = 7",
    "call ext. 1234",
    "1,234,567 visitors",
    "10:30-11:45",
    "v2.0.1",
    "2001:2002 season",
    "第12345678号文件",
    "see https://example.com/page?id=42&sort=asc",
]


@pytest.mark.parametrize("text,masked,kind", PII_CASES)
def test_pii_is_masked(text, masked, kind):
    out, counts = mask_pii(text)
    assert out == masked
    assert kind in counts


@pytest.mark.parametrize("text", NOT_PII)
def test_ordinary_numbers_dates_and_urls_are_not_pii(text):
    assert mask_pii(text) == (text, {})


def test_clean_reports_each_rule_by_language_and_masks_pii(tmp_path):
    ok_en = "The capital of France is Paris. It sits on the river Seine and has many museums."
    ok_zh = "法国的首都是巴黎。巴黎位于塞纳河畔，有很多博物馆，每年吸引大量游客前来参观。"
    rows = [
        {"id": "en", "text": ok_en},
        {"id": "zh", "text": ok_zh},
        {"id": "short", "text": "ok"},
        {"id": "empty", "text": "   "},
        {"id": "spam", "text": " ".join(f"buy http://spam.example.com/{i}" for i in range(10))},
        {"id": "digits", "text": "1234 5678 9012 3456 7890 1234 5678 9012 3456 7890"},
        {"id": "replines", "text": "\n".join(["same line again"] * 6 + ["a different one"])},
        {"id": "casino", "text": "Best online casino bonuses for new players, sign up today and win big."},
        {"id": "boiler", "text": ok_zh + "\n转载自某某网站，版权归原作者所有\n责任编辑：张三"},
        {"id": "refs", "text": ok_en + "\nReferences\n[1] Smith, J. (2020). A paper. Journal."},
        {"id": "email", "text": ok_en + " Write to alice@example.com."},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    res = run_cli(["data", "clean", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out"])
    assert res.exit_code == 0, res.output
    out = {r["id"]: r["text"] for f in sorted((tmp_path / "out").glob("part-*.jsonl")) for r in read_jsonl(f)}
    assert set(out) == {"en", "zh", "boiler", "refs", "email"}
    assert out["boiler"] == ok_zh and out["refs"] == ok_en
    assert out["email"].endswith("Write to <EMAIL>.")
    report = json.loads((tmp_path / "out" / "_report.json").read_text())
    dropped = report["stats"]["dropped"]
    assert {k: v["docs"] for k, v in dropped.items()} == {
        "empty": 1,
        "min_length": 1,
        "url_density": 1,
        "char_ratios": 1,
        "repeated_lines": 1,
        "keyword_blocklist": 1,
    }
    assert dropped["min_length"]["bytes"] == 2 and set(dropped["min_length"]["by_lang"]) == {"en"}
    modified = report["stats"]["modified"]
    assert modified["boilerplate_lines"]["docs"] == 2
    assert set(modified["boilerplate_lines"]["by_lang"]) == {"zh", "en"}
    assert report["pii_found"] == {"email": 1}
    assert "dropped by url_density: 1 docs" in res.output


def test_pii_drop_mode_and_custom_rules_file(tmp_path):
    rows = [
        {"text": "新冠疫情期间的一则新闻，内容关于疫情防控措施和新冠疫苗接种的安排。"},
        {"text": "A perfectly normal English sentence about the weather today."},
        {"text": "Reach me on 13812345678 for the details of the weather report."},
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - min_length: {min_chars: 10}\n"
        "  - keyword_blocklist: {words: [新冠, 疫情], max_hits: 2}\n",
        encoding="utf-8",
    )
    res = run_cli(
        [
            "data",
            "clean",
            "--input",
            tmp_path / "in.jsonl",
            "--output",
            tmp_path / "out.jsonl",
            "--rules",
            tmp_path / "rules.yaml",
            "--pii",
            "drop",
        ]
    )
    assert res.exit_code == 0, res.output
    assert [r["text"] for r in read_jsonl(tmp_path / "out.jsonl")] == [rows[1]["text"]]
    report = json.loads((tmp_path / "_out.jsonl.report.json").read_text())
    assert report["stats"]["dropped"]["keyword_blocklist"]["by_lang"] == {"zh": {"docs": 1, "bytes": 99}}
    assert report["stats"]["dropped"]["pii"]["docs"] == 1


def test_bad_rules_file_is_a_one_line_error(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"text": "hello there, a fine document"}])
    (tmp_path / "rules.yaml").write_text("rules:\n  - min_lenght: {min_chars: 10}\n")
    res = run_cli(
        [
            "data",
            "clean",
            "--input",
            tmp_path / "in.jsonl",
            "--output",
            tmp_path / "o",
            "--rules",
            tmp_path / "rules.yaml",
        ]
    )
    assert (
        res.exit_code == 2
        and "unknown rule 'min_lenght'" in res.output
        and str(tmp_path / "rules.yaml") in res.output
    )
    with pytest.raises(Exception, match="unexpected keyword"):
        build_rules([{"min_length": {"min_charz": 3}}])
    # unparsable YAML (names the line) and non-UTF-8 bytes are one-line errors too, not tracebacks
    (tmp_path / "broken.yaml").write_text("rules:\n  - min_length: {min_chars: [1\n")
    (tmp_path / "latin1.yaml").write_bytes("rules:\n  - keyword_blocklist: {words: [caf\xe9]}\n".encode("latin-1"))
    for name, expected in (("broken.yaml", "broken.yaml:3: invalid YAML"), ("latin1.yaml", "not UTF-8 text")):
        res = run_cli(["data", "clean", "--input", tmp_path / "in.jsonl", "--output", tmp_path / "o",
                       "--rules", tmp_path / name])
        assert res.exit_code == 2 and expected in res.output, res.output


def test_filters_are_registered_through_the_plugin_bus():
    from llmctl.core.plugins import get_bus

    names = set(get_bus().registry("filters"))
    assert {
        "min_length",
        "char_ratios",
        "repeated_lines",
        "repeated_ngrams",
        "url_density",
        "keyword_blocklist",
        "boilerplate_lines",
    } <= names
    assert get_bus().registry("filters")["min_length"].plugin == "data"


def test_pii_is_a_registered_filter_in_the_clean_chain(tmp_path):
    """--pii drop is the `pii` filter from the bus, last in the chain; the same filter named in a rules list
    (without --pii) drops the same document and reports the same counts."""
    from llmctl.core.plugins import lookup
    from llmctl.data.clean import run_clean
    from llmctl.data.filters.pii import PiiFilter

    assert lookup("filters", "pii") is PiiFilter
    rows = [{"text": "Reach me on 13812345678 for the details."}, {"text": "Nothing private in this line."}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    a = run_clean([tmp_path / "in.jsonl"], tmp_path / "a", rules=["min_length"], pii="drop")
    b = run_clean([tmp_path / "in.jsonl"], tmp_path / "b", rules=["min_length", {"pii": {"mode": "drop"}}],
                  pii="keep")
    assert a["rules"] == ["min_length"] and a["pii_found"] == b["pii_found"] == {"phone": 1}
    assert a["stats"] == b["stats"] and a["stats"]["dropped"]["pii"]["docs"] == 1
    assert [r["text"] for r in read_jsonl(tmp_path / "a" / "part-00000-00000.jsonl")] == [rows[1]["text"]]
