"""Phrase banks for campaign prompts: independent vocabularies the template grammar draws on.

A bank groups sentences by meaning: every group is a tuple of wordings of the
same sentence. A template fixes one wording of each sentence it uses; the
paraphrase knob swaps it for another wording of its group (and swaps words
for synonyms), so the meaning and most of the text survive while exact
hashes of the scaffold do not.

The banks share no sentences: `en-plain` is direct English, `en-formal` a
wordier register, `es` Spanish. Placeholders in braces (`{lang}`) are slots
filled per request.
"""

from __future__ import annotations

from dataclasses import dataclass

Groups = tuple[tuple[str, ...], ...]
CATEGORIES = ("implement", "refactor", "debug", "agent", "plan", "grade")
SECTIONS = ("task", "context", "constraints", "reasoning", "output")


@dataclass(frozen=True, slots=True)
class Bank:
    """One vocabulary for campaign templates."""

    name: str
    labels: dict[str, tuple[str, ...]]  # section name -> heading wordings
    role: Groups
    tasks: dict[str, Groups]  # category -> task sentences
    context: Groups
    constraints: Groups
    cot: Groups
    grade_cot: Groups  # reasoning requests for grading prompts
    formats: Groups
    scale: Groups  # grading instructions; {top} is the top of the scale
    criteria: tuple[str, ...]
    rubric: tuple[str, ...]  # heading wordings of the rubric list
    components: tuple[str, ...]
    goals: tuple[str, ...]
    trace: tuple[str, str, str]  # step, call, observation
    answers: tuple[str, str, str]  # question, answer A, answer B
    synonyms: dict[str, tuple[str, ...]]


def bank(name: str) -> Bank:
    """The bank called `name` (see knobs.VOCABULARIES)."""
    from authz.sim.bank_en import FORMAL, PLAIN
    from authz.sim.bank_es import SPANISH

    banks = {b.name: b for b in (PLAIN, FORMAL, SPANISH)}
    return banks[name]
