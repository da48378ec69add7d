"""Readers for MMLU, CMMLU and C-Eval in their original on-disk layouts, plus subject -> category maps.

The CSVs are read with the `csv` module and every cell is kept as the text in the file (the official scripts
go through pandas, which turns a cell such as "None" or "1.50" into NaN / 1.5; we keep what the author wrote).
A malformed row is a UserError naming file and line: a silently dropped or shifted question would change a
score without anyone noticing. An empty test file is not an error: that subject is skipped and reported.
Torch-free.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from llmctl.core.config import did_you_mean
from llmctl.core.errors import UserError

LETTERS = ("A", "B", "C", "D")


@dataclasses.dataclass(frozen=True)
class Question:
    subject: str
    id: str  # C-Eval's `id`, CMMLU's index column, MMLU's 0-based row number
    question: str
    choices: tuple[str, str, str, str]
    answer: str | None  # "A".."D"; None where the split publishes no labels (C-Eval test)
    where: str  # "file:line", for messages


# ---- category maps ---------------------------------------------------------------------------------------
# MMLU: hendrycks/test categories.py (subject -> subcategory -> one of 4 categories).
_MMLU_SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics", "business_ethics": "business",
    "clinical_knowledge": "health", "college_biology": "biology", "college_chemistry": "chemistry",
    "college_computer_science": "computer science", "college_mathematics": "math", "college_medicine": "health",
    "college_physics": "physics", "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering", "elementary_mathematics": "math",
    "formal_logic": "philosophy", "global_facts": "other", "high_school_biology": "biology",
    "high_school_chemistry": "chemistry", "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics", "high_school_physics": "physics",
    "high_school_psychology": "psychology", "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health", "human_sexuality": "culture",
    "international_law": "law", "jurisprudence": "law", "logical_fallacies": "philosophy",
    "machine_learning": "computer science", "management": "business", "marketing": "business",
    "medical_genetics": "health", "miscellaneous": "other", "moral_disputes": "philosophy",
    "moral_scenarios": "philosophy", "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law", "professional_medicine": "health",
    "professional_psychology": "psychology", "public_relations": "politics", "security_studies": "politics",
    "sociology": "culture", "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
_MMLU_CATEGORIES = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering"),
    "humanities": ("history", "philosophy", "law"),
    "social sciences": ("politics", "culture", "economics", "geography", "psychology"),
    "other": ("other", "business", "health"),
}

# CMMLU: haonan-li/CMMLU src/categories.py (a subject may sit in two categories, e.g. "China specific").
_CMMLU_SUBJECTS = {  # subject -> (Chinese name, subcategories)
    "agronomy": ("农学", ("other",)), "anatomy": ("解剖学", ("biology",)),
    "ancient_chinese": ("古汉语", ("linguistics", "china specific")), "arts": ("艺术学", ("arts",)),
    "astronomy": ("天文学", ("physics",)), "business_ethics": ("商业伦理", ("business",)),
    "chinese_civil_service_exam": ("中国公务员考试", ("politics", "china specific")),
    "chinese_driving_rule": ("中国驾驶规则", ("other", "china specific")),
    "chinese_food_culture": ("中国饮食文化", ("culture", "china specific")),
    "chinese_foreign_policy": ("中国外交政策", ("politics", "china specific")),
    "chinese_history": ("中国历史", ("history", "china specific")),
    "chinese_literature": ("中国文学", ("literature", "china specific")),
    "chinese_teacher_qualification": ("中国教师资格", ("education", "china specific")),
    "clinical_knowledge": ("临床知识", ("other",)), "college_actuarial_science": ("大学精算学", ("math",)),
    "college_education": ("大学教育学", ("education",)),
    "college_engineering_hydrology": ("大学工程水文学", ("engineering",)), "college_law": ("大学法律", ("law",)),
    "college_mathematics": ("大学数学", ("math",)), "college_medical_statistics": ("大学医学统计", ("statistics",)),
    "college_medicine": ("大学医学", ("other",)), "computer_security": ("计算机安全", ("other",)),
    "conceptual_physics": ("概念物理学", ("physics",)),
    "construction_project_management": ("建设工程管理", ("other", "china specific")),
    "economics": ("经济学", ("economics",)), "education": ("教育学", ("education",)),
    "electrical_engineering": ("电气工程", ("engineering",)),
    "elementary_chinese": ("小学语文", ("linguistics", "china specific")),
    "elementary_commonsense": ("小学常识", ("other", "china specific")),
    "elementary_information_and_technology": ("小学信息技术", ("other",)),
    "elementary_mathematics": ("初等数学", ("math",)), "ethnology": ("民族学", ("culture", "china specific")),
    "food_science": ("食品科学", ("other",)), "genetics": ("遗传学", ("biology",)),
    "global_facts": ("全球事实", ("global",)), "high_school_biology": ("高中生物", ("biology",)),
    "high_school_chemistry": ("高中化学", ("chemistry",)), "computer_science": ("计算机科学", ("computer science",)),
    "high_school_geography": ("高中地理", ("geography",)), "high_school_mathematics": ("高中数学", ("math",)),
    "high_school_physics": ("高中物理学", ("physics",)),
    "high_school_politics": ("高中政治", ("politics", "china specific")),
    "human_sexuality": ("人类性行为", ("other",)), "international_law": ("国际法学", ("law",)),
    "journalism": ("新闻学", ("sociology",)), "jurisprudence": ("法理学", ("law",)),
    "legal_and_moral_basis": ("法律与道德基础", ("other",)), "logical": ("逻辑学", ("philosophy",)),
    "machine_learning": ("机器学习", ("computer science",)), "management": ("管理学", ("business",)),
    "marketing": ("市场营销", ("business",)), "marxist_theory": ("马克思主义理论", ("philosophy",)),
    "modern_chinese": ("现代汉语", ("linguistics", "china specific")), "nutrition": ("营养学", ("other",)),
    "philosophy": ("哲学", ("philosophy",)), "professional_accounting": ("专业会计", ("business",)),
    "professional_law": ("专业法学", ("law",)), "professional_medicine": ("专业医学", ("other",)),
    "professional_psychology": ("专业心理学", ("psychology",)), "public_relations": ("公共关系", ("politics",)),
    "security_study": ("安全研究", ("politics",)), "sociology": ("社会学", ("culture",)),
    "sports_science": ("体育学", ("other",)),
    "traditional_chinese_medicine": ("中医中药", ("other", "china specific")), "virology": ("病毒学", ("biology",)),
    "world_history": ("世界历史", ("history",)), "world_religions": ("世界宗教", ("global",)),
}
_CMMLU_CATEGORIES = {
    "STEM": ("physics", "chemistry", "biology", "computer science", "math", "engineering", "statistics"),
    "Humanities": ("history", "philosophy", "law", "arts", "literature", "global"),
    "Social Science": ("linguistics", "business", "politics", "culture", "economics", "geography", "psychology",
                       "education", "sociology"),
    "Other": ("other",),
    "China specific": ("china specific",),
}

# C-Eval: hkust-nlp/ceval subject_mapping.json (subject -> Chinese name, category) and the README's Hard subset.
_CEVAL_SUBJECTS = {
    "computer_network": ("计算机网络", "STEM"), "operating_system": ("操作系统", "STEM"),
    "computer_architecture": ("计算机组成", "STEM"), "college_programming": ("大学编程", "STEM"),
    "college_physics": ("大学物理", "STEM"), "college_chemistry": ("大学化学", "STEM"),
    "advanced_mathematics": ("高等数学", "STEM"), "probability_and_statistics": ("概率统计", "STEM"),
    "discrete_mathematics": ("离散数学", "STEM"), "electrical_engineer": ("注册电气工程师", "STEM"),
    "metrology_engineer": ("注册计量师", "STEM"), "high_school_mathematics": ("高中数学", "STEM"),
    "high_school_physics": ("高中物理", "STEM"), "high_school_chemistry": ("高中化学", "STEM"),
    "high_school_biology": ("高中生物", "STEM"), "middle_school_mathematics": ("初中数学", "STEM"),
    "middle_school_biology": ("初中生物", "STEM"), "middle_school_physics": ("初中物理", "STEM"),
    "middle_school_chemistry": ("初中化学", "STEM"), "veterinary_medicine": ("兽医学", "STEM"),
    "college_economics": ("大学经济学", "Social Science"), "business_administration": ("工商管理", "Social Science"),
    "marxism": ("马克思主义基本原理", "Social Science"),
    "mao_zedong_thought": ("毛泽东思想和中国特色社会主义理论体系概论", "Social Science"),
    "education_science": ("教育学", "Social Science"), "teacher_qualification": ("教师资格", "Social Science"),
    "high_school_politics": ("高中政治", "Social Science"), "high_school_geography": ("高中地理", "Social Science"),
    "middle_school_politics": ("初中政治", "Social Science"),
    "middle_school_geography": ("初中地理", "Social Science"),
    "modern_chinese_history": ("近代史纲要", "Humanities"),
    "ideological_and_moral_cultivation": ("思想道德修养与法律基础", "Humanities"), "logic": ("逻辑学", "Humanities"),
    "law": ("法学", "Humanities"), "chinese_language_and_literature": ("中国语言文学", "Humanities"),
    "art_studies": ("艺术学", "Humanities"), "professional_tour_guide": ("导游资格", "Humanities"),
    "legal_professional": ("法律职业资格", "Humanities"), "high_school_chinese": ("高中语文", "Humanities"),
    "high_school_history": ("高中历史", "Humanities"), "middle_school_history": ("初中历史", "Humanities"),
    "civil_servant": ("公务员", "Other"), "sports_science": ("体育学", "Other"),
    "plant_protection": ("植物保护", "Other"), "basic_medicine": ("基础医学", "Other"),
    "clinical_medicine": ("临床医学", "Other"), "urban_and_rural_planner": ("注册城乡规划师", "Other"),
    "accountant": ("注册会计师", "Other"), "fire_engineer": ("注册消防工程师", "Other"),
    "environmental_impact_assessment_engineer": ("环境影响评价工程师", "Other"), "tax_accountant": ("税务师", "Other"),
    "physician": ("医师资格", "Other"),
}
CEVAL_HARD = ("advanced_mathematics", "discrete_mathematics", "probability_and_statistics", "college_chemistry",
              "college_physics", "high_school_mathematics", "high_school_chemistry", "high_school_physics")

#: Category of a subject the benchmark's map does not know (e.g. the quickstart's own MC set).
UNMAPPED = "unmapped"


def _categories_of(subcats: tuple[str, ...], table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(cat for cat, members in table.items() if any(s in members for s in subcats))


MMLU_CATEGORIES = {s: _categories_of((sub,), _MMLU_CATEGORIES) for s, sub in _MMLU_SUBCATEGORY.items()}
CMMLU_CATEGORIES = {s: _categories_of(subs, _CMMLU_CATEGORIES) for s, (_, subs) in _CMMLU_SUBJECTS.items()}
CEVAL_CATEGORIES = {s: (cat,) + (("Hard",) if s in CEVAL_HARD else ()) for s, (_, cat) in _CEVAL_SUBJECTS.items()}


# ---- benchmarks ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark's layout: where a subject's CSV lives per split, how its rows read, how it groups."""

    name: str
    splits: tuple[str, ...]
    default_split: str
    file_pattern: str  # "{subject}_{split}.csv" or "{subject}.csv"
    columns: str  # human description for error messages
    category_map: dict[str, tuple[str, ...]]
    category_order: tuple[str, ...]
    zh_names: dict[str, str] = dataclasses.field(default_factory=dict)
    aliases: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # --subjects hard
    shots_split: str = "dev"

    def resolve_dir(self, data_dir: str | Path) -> Path:
        """The directory holding the split folders: `data_dir` itself, or its `data/` (MMLU/CMMLU archives)."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise UserError(f"{self.name} data directory not found: {data_dir}")
        if not any((data_dir / s).is_dir() for s in self.splits) and (data_dir / "data").is_dir():
            return data_dir / "data"
        return data_dir

    def split_dir(self, data_dir: Path, split: str) -> Path:
        if split not in self.splits:
            raise UserError(f"{self.name}: unknown split '{split}'; splits: {', '.join(self.splits)}")
        path = data_dir / split
        if not path.is_dir():
            found = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
            raise UserError(f"{data_dir}: no '{split}/' directory for {self.name} "
                            f"(found: {', '.join(found) or 'nothing'}; layout: {split}/{self._pattern_for(split)})")
        return path

    def _pattern_for(self, split: str) -> str:
        return self.file_pattern.replace("{split}", split)

    def subjects(self, data_dir: Path, split: str) -> list[str]:
        """Subjects present in a split, sorted (the official scripts' order)."""
        suffix = self._pattern_for(split).replace("{subject}", "")
        names = sorted(p.name[: -len(suffix)] for p in self.split_dir(data_dir, split).glob(f"*{suffix}"))
        return [n for n in names if n]

    def select(self, available: list[str], wanted: list[str] | None) -> list[str]:
        """`wanted` (names or aliases such as `hard`) checked against what is on disk, in on-disk order."""
        if not wanted:
            return available
        chosen: set[str] = set()
        for name in wanted:
            if name in self.aliases:  # an alias takes those of its subjects that are present
                present = [s for s in self.aliases[name] if s in available]
                if not present:
                    raise UserError(f"{self.name}: none of the '{name}' subjects is in the data")
                chosen.update(present)
            elif name in available:
                chosen.add(name)
            else:
                raise UserError(f"{self.name}: no subject '{name}' in the data{did_you_mean(name, available)}; "
                                f"available: {', '.join(available)}")
        return [s for s in available if s in chosen]

    def path(self, data_dir: Path, split: str, subject: str) -> Path:
        return data_dir / split / self._pattern_for(split).replace("{subject}", subject)

    def read(self, path: Path, subject: str) -> list[Question]:
        raise NotImplementedError

    def categories(self, subject: str) -> tuple[str, ...]:
        return self.category_map.get(subject, (UNMAPPED,))

    def display_name(self, subject: str) -> str:
        return self.zh_names.get(subject, subject.replace("_", " "))


def _rows(path: Path):
    """(first line number, row) for each CSV record; multi-line quoted cells keep the record's first line."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            line = 1
            for row in reader:
                yield line, row
                line = reader.line_num + 1
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: unreadable CSV ({e})") from None


def _question(path: Path, line: int, subject: str, qid: str, cells: list[str], answer: str | None) -> Question:
    if answer is not None:
        answer = answer.strip()
        if answer not in LETTERS:
            raise UserError(f"{path}:{line}: answer {answer!r} is not one of A, B, C, D")
    return Question(subject, qid, cells[0], tuple(cells[1:5]), answer, f"{path}:{line}")


class _MMLU(Benchmark):
    def read(self, path: Path, subject: str) -> list[Question]:
        out = []
        for line, row in _rows(path):
            if not row:
                continue
            if len(row) != 6:
                raise UserError(f"{path}:{line}: expected 6 columns ({self.columns}), found {len(row)}")
            out.append(_question(path, line, subject, str(len(out)), row[:5], row[5]))
        return out


class _WithHeader(Benchmark):
    """CMMLU (`,Question,A,B,C,D,Answer`) and C-Eval (`id,question,A,B,C,D[,answer[,explanation]]`)."""

    def read(self, path: Path, subject: str) -> list[Question]:
        rows = _rows(path)
        first = next(rows, None)
        if first is None:
            return []
        header = [h.strip().lower() for h in first[1]]
        if header[1:6] != ["question", "a", "b", "c", "d"]:
            raise UserError(f"{path}:1: header {','.join(first[1])!r} is not {self.columns!r}")
        has_answer = len(header) > 6 and header[6] == "answer"
        out = []
        for line, row in rows:
            if not row:
                continue
            if len(row) != len(header):
                raise UserError(f"{path}:{line}: expected {len(header)} columns ({','.join(first[1])}), "
                                f"found {len(row)}")
            out.append(_question(path, line, subject, row[0], row[1:6], row[6] if has_answer else None))
        return out


MMLU = _MMLU("mmlu", ("dev", "val", "test"), "test", "{subject}_{split}.csv", "question,A,B,C,D,answer",
             MMLU_CATEGORIES, tuple(_MMLU_CATEGORIES))
CMMLU = _WithHeader("cmmlu", ("dev", "test"), "test", "{subject}.csv", ",Question,A,B,C,D,Answer",
                    CMMLU_CATEGORIES, tuple(_CMMLU_CATEGORIES), zh_names={s: zh for s, (zh, _) in _CMMLU_SUBJECTS.items()})
CEVAL = _WithHeader("ceval", ("dev", "val", "test"), "val", "{subject}_{split}.csv",
                    "id,question,A,B,C,D,answer[,explanation]", CEVAL_CATEGORIES,
                    ("STEM", "Social Science", "Humanities", "Other", "Hard"),
                    zh_names={s: zh for s, (zh, _) in _CEVAL_SUBJECTS.items()}, aliases={"hard": CEVAL_HARD})

BENCHMARKS = {b.name: b for b in (MMLU, CMMLU, CEVAL)}
