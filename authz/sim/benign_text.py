"""Prompts of benign users: individuals (with a personal writing style), researchers, CI jobs."""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from authz.sim import code
from authz.sim.benign_topics import MODIFIERS, PASTE, SPANISH, TOPICS, Topic
from authz.sim.draw import pick

_TOPIC_NAMES = tuple(TOPICS)
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class Style:
    """How one person writes: fixed per user."""

    topics: tuple[str, ...]  # what they mostly ask about
    lower: bool  # writes in lower case
    lead: float  # chance of describing their situation first
    modifier: float  # chance of an extra instruction at the end
    spanish: float  # share of prompts written in Spanish

    @staticmethod
    def draw(rng: random.Random, spanish: float = 0.0) -> Style:
        """A writing style: 2 to 5 favourite topics, casing and verbosity."""
        return Style(
            topics=tuple(rng.sample(_TOPIC_NAMES, rng.randint(2, 5))),
            lower=rng.random() < 0.2,
            lead=rng.uniform(0.1, 0.7),
            modifier=rng.uniform(0.05, 0.5),
            spanish=spanish,
        )


_FIELDS: dict[str, tuple[str, ...]] = {}


def _fill(rng: random.Random, text: str, topic: Topic) -> str:
    """Fill a frame's slots (only those it names) from the topic's values."""
    if "{" not in text:
        return text
    names = _FIELDS.get(text)
    if names is None:
        names = _FIELDS[text] = tuple(
            dict.fromkeys(f for _, f, _, _ in _FORMATTER.parse(text) if f)
        )
    return text.format_map({name: pick(rng, topic.slots[name]) for name in names})


def individual_prompt(rng: random.Random, style: Style) -> str:
    """What an ordinary user types: mostly their own topics, sometimes anything."""
    if style.spanish and rng.random() < style.spanish:
        topic, name = SPANISH, "es"
    else:
        name = pick(rng, style.topics) if rng.random() < 0.85 else pick(rng, _TOPIC_NAMES)
        topic = TOPICS[name]
    parts = []
    if rng.random() < style.lead:
        parts.append(_fill(rng, pick(rng, topic.leads), topic))
    parts.append(_fill(rng, pick(rng, topic.asks), topic))
    if rng.random() < 0.15:
        parts.append(_fill(rng, pick(rng, topic.asks), topic))
    if rng.random() < style.modifier and name != "es":
        parts.append(pick(rng, MODIFIERS))
    text = " ".join(parts)
    if name == "writing" and rng.random() < 0.5:
        text += "\n\n" + " ".join(rng.sample(PASTE, rng.randint(2, 6)))
    elif name == "programming" and rng.random() < 0.5:
        _, ext, style_ = code.lang(rng)
        func = code.identifier(rng, style_)
        text += "\n\n" + code.snippet(rng, func, ext)
        if rng.random() < 0.5:
            text += "\n\n" + code.error(rng, ext, func, code.file_path(rng, ext))
    elif name == "data" and rng.random() < 0.4:
        rows = [
            f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d},{rng.randint(10, 9999)},"
            f"{pick(rng, ('north', 'south', 'east', 'west'))}"
            for _ in range(rng.randint(3, 8))
        ]
        text += "\n\nmonth,amount,region\n" + "\n".join(rows)
    if style.lower:
        text = text.lower().replace("?", "")
    return text


# --- researchers: reasoning requests and evaluation rubrics ---------------------------

_PUZZLES = (
    "A bat and a ball cost {a}.10 in total. The bat costs {a} dollar more than the ball. How much "
    "does the ball cost?",
    "Prove that the sum of the first {n} odd numbers is a perfect square.",
    "How many ways can {n} people sit around a round table if two of them refuse to sit together?",
    "Is {big} prime? Justify the answer.",
    "Three boxes are labelled apples, oranges and mixed, and every label is wrong. What is the "
    "fewest fruits you must draw to relabel them?",
    "Find all integer solutions of x^2 - {n}y^2 = 1 with y below 100.",
    "A train leaves at {a}:00 going 80 km/h; another leaves an hour later at 100 km/h. When does "
    "the second catch up?",
    "What is the expected number of coin flips to see {a} heads in a row?",
)
_REASONING_ASKS = (
    "Reason step by step and show each step.",
    "Please show your full reasoning.",
    "Think carefully, then give the final answer on its own line.",
    "Explain your reasoning so I can compare it with a reference solution.",
    "Work it out step by step; I am checking intermediate steps.",
)
_EVAL = (
    "Rate the following model answer for {criterion} on a scale of 1 to {top}, and explain the "
    "score.\n\nQuestion: {question}\n\nAnswer: {answer}",
    "You are grading answers for an evaluation set. Criteria: {criterion}; {criterion2}. Give "
    "a score from 1 to {top} for each with a one-sentence justification.\n\nQuestion: "
    "{question}\nModel answer: {answer}",
    "Which of these two answers is more {adjective}? Explain briefly.\n\nA: {answer}\n\nB: "
    "{answer2}",
)
_EVAL_SLOTS = {
    "criterion": (
        "factual accuracy",
        "helpfulness",
        "faithfulness to the source",
        "harmlessness",
        "reasoning quality",
        "calibration",
    ),
    "criterion2": ("clarity", "conciseness", "completeness", "tone"),
    "top": ("5", "7", "10"),
    "adjective": ("accurate", "helpful", "faithful to the question", "concise"),
    "question": (
        "What causes the seasons on Earth?",
        "Summarise the plot of Hamlet in two sentences.",
        "Why do interest rates affect inflation?",
        "What is the capital of Australia?",
        "Explain how a hash map handles collisions.",
    ),
    "answer": (
        "The Earth's distance from the Sun changes during the year.",
        "Canberra is the capital.",
        "A prince avenges his father and most characters die.",
        "Higher rates reduce borrowing and spending, which cools prices.",
        "Collisions are resolved by chaining or open addressing.",
    ),
    "answer2": (
        "The tilt of Earth's axis changes the angle of sunlight.",
        "Sydney.",
        "It uses linked lists in each bucket.",
        "Rates have no effect on prices.",
    ),
}


def researcher_prompt(rng: random.Random) -> tuple[str, bool]:
    """(prompt, is an evaluation prompt): puzzles asking for reasoning, or rubric grading."""
    if rng.random() < 0.35:
        slots = {k: pick(rng, v) for k, v in _EVAL_SLOTS.items()}
        return pick(rng, _EVAL).format_map(slots), True
    puzzle = pick(rng, _PUZZLES).format(
        a=rng.randint(1, 9), n=rng.randint(3, 40), big=rng.randrange(10001, 999999, 2)
    )
    return f"{puzzle} {pick(rng, _REASONING_ASKS)}", False


# --- CI jobs: one scaffold per job, slots for files, diffs and test names -------------

_CI_JOBS = (
    (
        "review",
        "Review the following diff from {repo} for bugs, security issues and style "
        "problems. Reply with a JSON list of findings (file, line, severity, message)."
        "\n\n{diff}",
    ),
    (
        "tests",
        "Write pytest unit tests for the function `{func}` in `{file}`. Cover normal "
        "input, empty input and errors. Return only the test file.\n\n```python\n{code}\n```",
    ),
    (
        "triage",
        "CI job {job} failed on {repo}@{sha}. Failing test: {test}.\nLog excerpt:\n"
        "```\n{error}\n```\nClassify the failure as flaky, infra or code and suggest a "
        "fix in two sentences.",
    ),
    (
        "changelog",
        "Write a one-paragraph changelog entry for the pull request below. Audience: "
        "{repo} users.\n\nTitle: {title}\nFiles changed: {files}\n\n{diff}",
    ),
    (
        "docstring",
        "Add a docstring to `{func}` in `{file}`. Keep the code unchanged and return "
        "the whole function.\n\n```python\n{code}\n```",
    ),
)
_TITLES = (
    "Fix pagination off-by-one",
    "Add retry to uploader",
    "Bump dependencies",
    "Refactor config loading",
    "Handle empty payloads",
    "Speed up report export",
)


def ci_jobs(rng: random.Random) -> list[tuple[str, str]]:
    """The 1 to 3 jobs (name, scaffold) an organisation's CI sends, fixed for the entity."""
    return rng.sample(_CI_JOBS, rng.randint(1, 3))


def ci_prompt(rng: random.Random, scaffold: str, repo: str) -> str:
    """One CI request: the job's scaffold with this run's files, diffs and test names."""
    func = code.identifier(rng)
    path = code.file_path(rng, "py")
    slots = {
        "repo": repo,
        "func": func,
        "file": path,
        "job": f"{pick(rng, ('unit', 'integration', 'lint', 'e2e'))}-{rng.randint(1, 8)}",
        "sha": f"{rng.getrandbits(28):07x}",
        "test": code.test_name(rng),
        "title": pick(rng, _TITLES),
    }
    if "{diff}" in scaffold:
        slots["diff"] = code.diff(rng, path)
    if "{code}" in scaffold:
        slots["code"] = code.snippet(rng, func, "py")
    if "{error}" in scaffold:
        slots["error"] = code.error(rng, "py", func, path)
    if "{files}" in scaffold:
        slots["files"] = ", ".join(code.file_path(rng, "py") for _ in range(rng.randint(1, 4)))
    return scaffold.format_map(slots)
