"""Few-shot prompts in each benchmark's official wording, cut to fit the model's context.

The strings are byte-for-byte those of the official scripts, so scores compare with published numbers:
- MMLU, hendrycks/test evaluate.py: `format_subject` returns the subject with a *leading* space and the header
  template already has one, so the header reads "... about  abstract algebra.\\n\\n" (two spaces); examples are
  "question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n" and the test question ends with "Answer:".
- CMMLU, haonan-li/CMMLU src/mp_utils.py: "以下是关于{科目}的单项选择题，请直接给出正确答案的选项。\\n\\n", examples
  "题目：question\\nA. ..\\n答案是：X\\n\\n".
- C-Eval, hkust-nlp/ceval evaluators/llama.py: "以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。\\n\\n",
  examples "question\\nA. ..\\n答案：X\\n\\n". (The official zero-shot path drops the header; we keep it for
  every shot count, as MMLU's and CMMLU's scripts do.)
Torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from .loaders import LETTERS, Question


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    header: str  # with {subject}: the display name (MMLU: underscores -> spaces; CMMLU/C-Eval: Chinese name)
    question_prefix: str
    answer_prefix: str  # what the prompt ends with; the answer letter follows it
    answer_sep: str  # between answer_prefix and the letter in the few-shot examples

    def render_header(self, subject_name: str) -> str:
        return self.header.format(subject=subject_name)

    def example(self, q: Question, include_answer: bool) -> str:
        text = self.question_prefix + q.question
        for letter, choice in zip(LETTERS, q.choices):
            text += f"\n{letter}. {choice}"
        text += self.answer_prefix
        if include_answer:
            text += f"{self.answer_sep}{q.answer}\n\n"
        return text


@dataclasses.dataclass(frozen=True)
class ClozeFormat(PromptFormat):
    """The cloze formulation (OLMES "CF", lm-eval's acc_norm): the options are not shown, the prompt ends in
    the answer prefix and each option's *text* is scored as the continuation. Small models that cannot yet
    map an answer to its letter (the "MCF" ability emerges with scale) are measured this way."""

    def example(self, q: Question, include_answer: bool) -> str:
        text = self.question_prefix + q.question + self.answer_prefix
        if include_answer:
            text += f"{self.answer_sep}{q.choices[LETTERS.index(q.answer)]}\n\n"
        return text

    def continuations(self, q: Question) -> list[str]:
        return [self.answer_sep + choice for choice in q.choices]

    @classmethod
    def of(cls, fmt: PromptFormat) -> "ClozeFormat":
        return cls(**dataclasses.asdict(fmt))


FORMATS = {
    "mmlu": PromptFormat("The following are multiple choice questions (with answers) about  {subject}.\n\n",
                         "", "\nAnswer:", " "),
    "cmmlu": PromptFormat("以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n", "题目：", "\n答案是：", ""),
    "ceval": PromptFormat("以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n", "", "\n答案：", ""),
}


def build_prompt(fmt: PromptFormat, subject_name: str, shots: Sequence[Question], q: Question) -> str:
    """Header, the few-shot examples with answers, then the question ending in the answer prefix."""
    return (fmt.render_header(subject_name) + "".join(fmt.example(s, True) for s in shots)
            + fmt.example(q, False))


@dataclasses.dataclass
class FittedPrompt:
    ids: list[int]
    shots: int  # examples kept
    truncated: bool  # even with no examples the prompt was too long: its start was cut off


def fit_prompt(encode: Callable[[str], list[int]], fmt: PromptFormat, subject_name: str,
               shots: Sequence[Question], q: Question, max_tokens: int) -> FittedPrompt:
    """Token ids of the prompt with as many shots as fit in `max_tokens`, dropping the earliest first; with
    none left and still too long, keep the last `max_tokens` tokens (the question's end and answer prefix)."""
    k = len(shots)
    while True:
        ids = encode(build_prompt(fmt, subject_name, shots[len(shots) - k:], q))
        if len(ids) <= max_tokens:
            return FittedPrompt(ids, k, False)
        if k == 0:
            return FittedPrompt(ids[len(ids) - max_tokens:], 0, True)
        k -= 1
