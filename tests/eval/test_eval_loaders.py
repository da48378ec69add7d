"""Loaders on the real MMLU/CMMLU/C-Eval CSVs, category maps, the official prompt text (golden strings typed
from each benchmark's own script), fitting shots into the context, and the letter-extraction rules."""

from __future__ import annotations

from collections import Counter

import pytest
from eval_helpers import CEVAL_DIR, CMMLU_DIR, FIXTURES, MMLU_DIR

from llmctl.core.errors import UserError
from llmctl.eval.loaders import CEVAL, CMMLU, MMLU, UNMAPPED
from llmctl.eval.prompts import FORMATS, build_prompt, fit_prompt
from llmctl.eval.scoring import extract_letter


def test_fixture_layouts_read_completely(real_fixtures):
    d = MMLU.resolve_dir(FIXTURES / "mmlu")  # the archive's data/ folder is found
    assert d == MMLU_DIR
    assert len(MMLU.subjects(d, "test")) == 10
    assert sum(len(MMLU.read(MMLU.path(d, "test", s), s)) for s in MMLU.subjects(d, "test")) == 1221
    assert sum(len(CMMLU.read(CMMLU.path(CMMLU_DIR, "test", s), s)) for s in CMMLU.subjects(CMMLU_DIR, "test")) == 2369
    assert sum(len(CEVAL.read(CEVAL.path(CEVAL_DIR, "val", s), s)) for s in CEVAL.subjects(CEVAL_DIR, "val")) == 253
    test = CEVAL.read(CEVAL.path(CEVAL_DIR, "test", "law"), "law")
    assert len(test) == 221 and all(q.answer is None for q in test)  # C-Eval test labels are not public


def test_row_contents_and_line_numbers(real_fixtures):
    q = MMLU.read(MMLU_DIR / "dev" / "abstract_algebra_dev.csv", "abstract_algebra")[1]
    assert q.choices == ("True, True", "False, False", "True, False", "False, True") and q.answer == "B"
    c = CMMLU.read(CMMLU_DIR / "dev" / "agronomy.csv", "agronomy")[0]
    assert (c.id, c.question, c.choices, c.answer) == ("0", "肉牛屠宰后，胴体的哪个部位肉质较好", ("胸", "腹", "大腿", "小腿"), "C")
    # accountant_dev row 0 has a multi-line explanation: row 1 starts on a later physical line
    rows = CEVAL.read(CEVAL_DIR / "dev" / "law_dev.csv", "law")
    assert rows[1].id == "1" and rows[1].answer == "B" and rows[1].where.endswith("law_dev.csv:4")


def test_category_maps_match_the_official_tables(real_fixtures):
    assert len(MMLU.category_map) == 57 and len(CMMLU.category_map) == 67 and len(CEVAL.category_map) == 52
    assert Counter(c for cs in MMLU.category_map.values() for c in cs) == {
        "STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    assert Counter(cs[0] for cs in CEVAL.category_map.values()) == {
        "STEM": 20, "Social Science": 10, "Humanities": 11, "Other": 11}
    assert sum("Hard" in cs for cs in CEVAL.category_map.values()) == 8
    assert CMMLU.categories("ancient_chinese") == ("Social Science", "China specific")
    assert CMMLU.categories("world_religions") == ("Humanities",)
    assert MMLU.categories("toyfacts") == (UNMAPPED,)
    assert CEVAL.select(CEVAL.subjects(CEVAL_DIR, "val"), ["hard"]) == ["high_school_mathematics", "high_school_physics"]


def test_mmlu_prompt_golden(real_fixtures):
    dev = MMLU.read(MMLU_DIR / "dev" / "world_religions_dev.csv", "world_religions")[:2]
    q = MMLU.read(MMLU_DIR / "test" / "world_religions_test.csv", "world_religions")[0]
    golden = (
        "The following are multiple choice questions (with answers) about  world religions.\n\n"
        " What is the sign of the covenant for Jewish males?\nA. The rainbow\nB. Circumcision\nC. A son\n"
        "D. Bar mitzvah\nAnswer: B\n\n"
        "What is the Second Gem in Buddhism?\nA. The Dharma\nB. The Sangha\nC. The Buddha\nD. The Bodhisattva\n"
        "Answer: A\n\n"
        " What can murtis be translated as?\nA. Offerings\nB. Prayers\nC. Apparitions\nD. Idols\nAnswer:")
    assert build_prompt(FORMATS["mmlu"], MMLU.display_name("world_religions"), dev, q) == golden


def test_cmmlu_prompt_golden(real_fixtures):
    dev = CMMLU.read(CMMLU_DIR / "dev" / "agronomy.csv", "agronomy")[:1]
    q = CMMLU.read(CMMLU_DIR / "test" / "agronomy.csv", "agronomy")[0]
    golden = ("以下是关于农学的单项选择题，请直接给出正确答案的选项。\n\n"
              "题目：肉牛屠宰后，胴体的哪个部位肉质较好\nA. 胸\nB. 腹\nC. 大腿\nD. 小腿\n答案是：C\n\n"
              "题目：在农业生产中被当作极其重要的劳动对象发挥作用，最主要的不可替代的基本生产资料是\nA. 农业生产工具\n"
              "B. 土地\nC. 劳动力\nD. 资金\n答案是：")
    assert build_prompt(FORMATS["cmmlu"], CMMLU.display_name("agronomy"), dev, q) == golden


def test_ceval_prompt_golden(real_fixtures):
    subject = "chinese_language_and_literature"
    dev = CEVAL.read(CEVAL_DIR / "dev" / f"{subject}_dev.csv", subject)[:2]
    q = CEVAL.read(CEVAL_DIR / "val" / f"{subject}_val.csv", subject)[0]
    golden = ("以下是中国关于中国语言文学考试的单项选择题，请选出其中的正确答案。\n\n"
              "“闯关东”中的“关东”指____。\nA. 东北\nB. 西北\nC. 华北\nD. 塞外\n答案：A\n\n"
              "八股文是____。\nA. 八种文体\nB. 一种程式化的文章样式\nC. 八种修辞方式\nD. 由八个部分构成的文章\n答案：B\n\n"
              "英语名词“lab”(实验室)原来的形式是“laboratory”，这在词的形成方式上属于____。\nA. 直接成词\nB. 变形成词\n"
              "C. 变性成词\nD. 逆序成词\n答案：")
    assert build_prompt(FORMATS["ceval"], CEVAL.display_name(subject), dev, q) == golden


def test_fit_prompt_drops_earliest_shots_then_cuts_the_start(real_fixtures):
    dev = MMLU.read(MMLU_DIR / "dev" / "astronomy_dev.csv", "astronomy")
    q = MMLU.read(MMLU_DIR / "test" / "astronomy_test.csv", "astronomy")[0]
    encode = lambda text: list(text.encode())  # noqa: E731  one "token" per byte
    full = len(build_prompt(FORMATS["mmlu"], "astronomy", dev, q).encode())
    assert fit_prompt(encode, FORMATS["mmlu"], "astronomy", dev, q, full).shots == 5
    fitted = fit_prompt(encode, FORMATS["mmlu"], "astronomy", dev, q, full - 1)
    assert fitted.shots == 4 and not fitted.truncated
    assert bytes(fitted.ids).decode() == build_prompt(FORMATS["mmlu"], "astronomy", dev[1:], q)  # dev[0] dropped
    tiny = fit_prompt(encode, FORMATS["mmlu"], "astronomy", dev, q, 20)
    assert tiny.shots == 0 and tiny.truncated and bytes(tiny.ids).decode().endswith("\nAnswer:")


# ---- bad input ----------------------------------------------------------------------------------------------
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_wrong_column_count_names_file_and_line(tmp_path):
    f = _write(tmp_path / "test" / "x_test.csv", "q1,a,b,c,d,A\n\"multi\nline q\",a,b,c,d,B\nq3,a,b,c,A\n")
    with pytest.raises(UserError, match=r"x_test\.csv:4: expected 6 columns .* found 5"):
        MMLU.read(f, "x")
    g = _write(tmp_path / "c" / "x.csv", ",Question,A,B,C,D,Answer\n0,q,a,b,c,d,A\n1,q,a,b,c,d\n")
    with pytest.raises(UserError, match=r"x\.csv:3: expected 7 columns"):
        CMMLU.read(g, "x")
    h = _write(tmp_path / "c" / "y.csv", "Question,A,B,C,D,Answer\nq,a,b,c,d,A\n")
    with pytest.raises(UserError, match=r"y\.csv:1: header"):
        CMMLU.read(h, "y")


def test_answer_outside_a_to_d(tmp_path):
    f = _write(tmp_path / "test" / "x_test.csv", "q1,a,b,c,d,A\nq2,a,b,c,d,E\n")
    with pytest.raises(UserError, match=r"x_test\.csv:2: answer 'E' is not one of A, B, C, D"):
        MMLU.read(f, "x")


def test_missing_split_dir_and_unknown_subject(tmp_path):
    (tmp_path / "dev").mkdir()
    with pytest.raises(UserError, match=r"no 'test/' directory for mmlu \(found: dev"):
        MMLU.subjects(tmp_path, "test")
    with pytest.raises(UserError, match="no subject 'anatomyy'.*did you mean 'anatomy'"):
        MMLU.select(["anatomy", "astronomy"], ["anatomyy"])


def test_extract_letter_rules():
    assert extract_letter(" B\n\nThe following are") == "B"  # rule 2: leading letter
    assert extract_letter("C. because") == "C"
    assert extract_letter("A选项正确") == "A"
    assert extract_letter("我认为答案是：D。") == "D"  # rule 3: cue
    assert extract_letter("Hmm, the answer is (C) here") == "C"
    assert extract_letter("Bad luck, Answer: D") == "D"  # cue wins over the word "Bad"
    assert extract_letter("I'd pick B over A") == "B"  # rule 4: first standalone letter
    assert extract_letter("first line\n\nA. next question") is None  # nothing before the blank line
    assert extract_letter("no letter here") is None
    assert extract_letter("") is None
