"""Cheap per-request features for extraction-pattern detection (see docs/detection.md).

One call, `extract(fields, headers)`, turns a request into the values that let
accounts be pooled: the prompt's template (an exact id of its masked scaffold
and a 64-bit SimHash for near duplicates), how hard the request asks for
reasoning or grading, a fingerprint of the client software, and the prompt's
size. It runs on the request path of every check, so all of it is bounded:
at most `limit` characters of prompt text are examined, the few regexes that
scan the whole text start with a literal or sit behind a substring test, what
each distinct token means is worked out once and cached, and nothing raises.

The network key (the client's /24 or /48) is `authz.clientip.client_network`,
re-exported here as `network_key`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import blake2b
from itertools import chain, islice
from typing import Any

from authz.clientip import client_network

DEFAULT_LIMIT = 4096
# The prompt walk stops after this many JSON values or this depth, whatever the text.
MAX_VALUES = 1024
MAX_DEPTH = 8
# Body members that carry prompt text, in the order they are read.
_TEXT_MEMBERS = ("system", "instructions", "messages", "prompt", "input")

network_key = client_network


# ---------------------------------------------------------------------------
# Prompt text


def prompt_text(fields: Mapping[str, Any], limit: int = DEFAULT_LIMIT) -> str:
    """The prompt a user sees (system, then message texts in order), at most `limit` characters."""
    return _prompt(fields, limit)[0]


def _prompt(fields: object, limit: int) -> tuple[str, bool]:
    """The prompt text and whether some of it was left unread."""
    if not isinstance(fields, Mapping) or limit <= 0:
        return "", False
    walk = _Walk(limit)
    for name in _TEXT_MEMBERS:
        if name in fields:
            walk.visit(fields[name], 0)
    return "\n".join(walk.parts)[:limit], walk.cut


class _Walk:
    """A bounded walk over message-like JSON collecting text, in document order."""

    __slots__ = ("chars", "cut", "parts", "values")

    def __init__(self, limit: int) -> None:
        self.chars = limit  # characters still wanted
        self.values = MAX_VALUES  # JSON values still allowed
        self.cut = False  # text (or values) were left unread
        self.parts: list[str] = []

    def visit(self, value: object, depth: int) -> None:
        """Collect strings, and the `text` and `content` of message and part objects."""
        if self.chars <= 0 or self.values <= 0 or depth > MAX_DEPTH:
            self.cut = True
            return
        self.values -= 1
        if isinstance(value, str):
            if value:
                self.parts.append(value[: self.chars])
                self.cut = self.cut or len(value) > self.chars
                self.chars -= len(value) + 1  # and the newline that joins parts
        elif isinstance(value, list):
            for item in value:
                if self.chars <= 0 or self.values <= 0:
                    self.cut = True  # items are left
                    return
                self.visit(item, depth + 1)
        elif isinstance(value, Mapping):
            # A message or a content part: its text (text parts) or nested content
            # (messages, tool results). Images, thinking blocks, tool inputs are skipped.
            text = value.get("text")
            if isinstance(text, str):
                self.visit(text, depth + 1)
            if "content" in value:
                self.visit(value["content"], depth + 1)


# ---------------------------------------------------------------------------
# Scaffold: the prompt with its slot values masked

# Placeholders are word characters only, so they survive punctuation removal.
NAME, CODE, URL, EMAIL, PATH, STR, HEX, NUM = (
    "_name_",
    "_code_",
    "_url_",
    "_email_",
    "_path_",
    "_str_",
    "_hex_",
    "_num_",
)

_UPPER = "A-ZÀ-ÖØ-ÞА-ЯЁΑ-Ω"
# A capitalised word (or run of them) after a space that follows neither sentence
# punctuation nor an opening bracket or quote: mid-sentence, so a name or a term,
# not a sentence start. The pronoun "I" is kept. The pattern starts with a space
# and a capital so the scan skips ahead quickly; the lookbehind then checks the
# character before the space.
_NAME_RE = re.compile(
    rf" [{_UPPER}](?<=[^\s.!?:;>*#\-\"“(\[{{] [{_UPPER}])"
    rf"(?!(?<=I)(?:['\u2019](?:m|d|s|ve|ll))?\b)"
    rf"[\w'\u2019-]*(?:[ ][{_UPPER}][\w'\u2019-]*)*(?!:\\)"  # C:\ is a drive, not a name
)
_INLINE_CODE_RE = re.compile(r"`[^`\n]{1,300}`")
# Straight, curly, low-high, guillemet and corner-bracket quotes; a single-quoted
# string needs no word character just outside, so apostrophes do not open one.
_QUOTED_RE = re.compile(
    r"\"[^\"]{0,400}\"|\u201c[^\u201d]{0,400}\u201d|\u201e[^\u201c\u201d]{0,400}[\u201c\u201d]"
    r"|\u00ab[^\u00bb]{0,400}\u00bb|\u300c[^\u300d]{0,400}\u300d|\u2018[^\u2019]{0,200}\u2019"
    r"|'(?<!\w')[^'\n]{1,200}'(?!\w)"
)
# Runs of one placeholder ("_num_ _num_ _num_" from a list of numbers) become one.
_REPEAT_RE = re.compile(r"(_(?:name|code|url|email|path|str|hex|num)_)(?: \1\b)+")
# Punctuation (ASCII and common Unicode) separates words; `_` does not, placeholders need it.
_ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"
_UNICODE_PUNCT = "“”„‘’«»‹›「」『』（）【】《》〈〉、。，！？：；…—–·•¿¡"  # noqa: RUF001 -- on purpose
_PUNCT = str.maketrans(dict.fromkeys(_ASCII_PUNCT, " "))
# For other text, str.translate looks every character up in a dict (slow): the
# UTF-8 bytes are translated instead (multi-byte characters never hold ASCII
# bytes) and the wider punctuation replaced by one bytes regex.
_PUNCT_BYTES = bytes.maketrans(_ASCII_PUNCT.encode(), b" " * len(_ASCII_PUNCT))
_WIDE_PUNCT_RE = re.compile(b"|".join(re.escape(c.encode()) for c in _UNICODE_PUNCT))


def _split_words(text: str) -> list[str]:
    """Text split at whitespace and punctuation."""
    if text.isascii():
        return text.translate(_PUNCT).split()
    data = text.encode("utf-8", "surrogatepass").translate(_PUNCT_BYTES)
    return _WIDE_PUNCT_RE.sub(b" ", data).decode("utf-8", "surrogatepass").split()


# Whole-token tests, on a whitespace-free token stripped of surrounding punctuation.
_TOKEN_EDGES = "()[]{}<>\"'`,;:.!?*"
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_UUID_RE = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
_EXTENSIONS = frozenset(
    str.split(
        "py pyi ipynb js mjs cjs ts tsx jsx go rs java kt kts scala c h cc cpp cxx hpp cs rb "
        "php swift sh bash zsh ps1 bat sql jl lua pl ex exs erl hs ml dart vue svelte html htm "
        "css scss json jsonl yaml yml toml ini cfg conf env xml csv tsv md rst txt log lock "
        "proto graphql tf gradle mk cmake pdf png jpg jpeg gif svg zip tar gz tgz parquet db "
        "sqlite wasm so dll exe bin docx xlsx pptx"
    )
)
# Rooted (/x, ~/x, ./x, ../x, C:\x) or with two separators or more (a/b/c).
_PATH_RE = re.compile(r"(?:[a-z]:\\|~/|\.{0,2}/)[\w.@+~-]|[\w.@+~-]+(?:[/\\][\w.@+~-]+){2,}")
_HEX_RUN = 12  # an all-hex word this long, with a letter and a digit, is an id or a hash
_HEX_DIGITS = frozenset("0123456789abcdef")
_DIGITS_RE = re.compile(r"[0-9]+")
_MAX_CACHED = 32  # longer tokens and words are not cached (they rarely repeat)
_CACHE_MAX = 65536


def scaffold(text: str) -> str:
    """The prompt's template skeleton: slot values masked, lower-case, one space between words."""
    return _scaffold(text)[0]


def _scaffold(text: str) -> tuple[str, list[str]]:
    """The scaffold and its words.

    Spans that need context (code, names, quotes) are masked first; then each
    whitespace-separated token is normalised on its own: what it shows (a URL,
    an e-mail address, a path, a number, an id) is decided once per distinct
    token and cached, so a common word costs a dictionary lookup.
    """
    t = _mask_fences(text) if "```" in text or "~~~" in text else text
    if "`" in t:
        t = _INLINE_CODE_RE.sub(f" {CODE} ", t)
    t = _NAME_RE.sub(" " + NAME, t)  # needs the case, so before anything lower-cases
    t = _QUOTED_RE.sub(f" {STR} ", t)
    words = list(chain.from_iterable(map(_TOKENS.__getitem__, t.split())))
    joined = " ".join(words)
    if "_ _" in joined:
        joined, runs = _REPEAT_RE.subn(r"\1", joined)
        if runs:
            words = joined.split()
    return joined, words


def _mask_fences(text: str) -> str:
    """Replace fenced code blocks (``` or ~~~, to the closing fence or the end) with CODE."""
    out: list[str] = []
    pos = 0
    while True:
        starts = [i for i in (text.find("```", pos), text.find("~~~", pos)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        end = text.find(text[start : start + 3], start + 3)
        out.append(text[pos:start])
        out.append(f" {CODE} ")
        if end < 0:
            return "".join(out)
        pos = end + 3
    out.append(text[pos:])
    return "".join(out)


def _token(token: str) -> tuple[str, ...]:
    """The words one whitespace-free token stands for: lower-case words or placeholders."""
    low = token.lower()
    if low.isalpha():
        return (low,)
    core = low.strip(_TOKEN_EDGES)
    if "://" in core or core.startswith("www."):
        return (URL,)
    if "@" in core and _EMAIL_RE.fullmatch(core):
        return (EMAIL,)
    if "-" in core and _UUID_RE.fullmatch(core):
        return (HEX,)
    if ":" in core:  # src/app.py:42:7 names a file too
        core = core.rstrip("0123456789:")
    if ("/" in core or "\\" in core) and _PATH_RE.match(core):
        return (PATH,)
    stem, dot, ext = core.rpartition(".")
    if dot and stem and ext in _EXTENSIONS:
        return (PATH,)
    return tuple(" ".join(map(_word, _split_words(low))).split())


def _word(word: str) -> str:
    """A word with a digit in it becomes NUM (or HEX for a long hex id); others stay."""
    if word.isalpha() or not any(c.isdigit() for c in word):
        return word
    if not word.isascii():  # digits inside CJK text: mask the digits only
        return _DIGITS_RE.sub(f" {NUM} ", word)
    if word.startswith("0x") or (
        len(word) >= _HEX_RUN and _HEX_DIGITS.issuperset(word) and not word.isdigit()
    ):
        return HEX
    return NUM


class _TokenCache(dict[str, tuple[str, ...]]):
    """The words of each raw token; short tokens only, cleared when full."""

    def __missing__(self, token: str) -> tuple[str, ...]:
        value = _token(token)
        if len(token) <= _MAX_CACHED:
            if len(self) >= _CACHE_MAX:
                self.clear()
            self[token] = value
        return value


_TOKENS = _TokenCache()


def template_id(scaffold_text: str) -> str:
    """The exact template fingerprint: 16 hex digits of BLAKE2b over the scaffold; '' for none."""
    if not scaffold_text:
        return ""
    return blake2b(scaffold_text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


# ---------------------------------------------------------------------------
# SimHash over word 3-gram shingles

_MASK64 = (1 << 64) - 1
# The shingles of at most this many words count: the first and the last half.
# Templates put their instructions at the start and the end; the bound keeps the cost flat.
SIMHASH_WORDS = 256


class _WordDigests(dict[str, bytes]):
    """A word's 64-bit BLAKE2b digest, cached: prompts reuse words."""

    def __missing__(self, word: str) -> bytes:
        digest = blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        if len(word) <= _MAX_CACHED:
            if len(self) >= _CACHE_MAX:
                self.clear()
            self[word] = digest
        return digest


_DIGESTS = _WordDigests()
# Mask j has bit j of every byte set, one byte per shingle.
_BIT_MASKS = [int.from_bytes(bytes([1 << j]) * SIMHASH_WORDS, "little") for j in range(8)]


def simhash(scaffold_text: str) -> int:
    """64-bit SimHash of a scaffold's word 3-grams; near-duplicate scaffolds differ in few bits."""
    return _simhash_words(scaffold_text.split())


def _simhash_words(words: list[str]) -> int:
    """SimHash of word 3-grams (the whole text as one feature below three words).

    A shingle's hash combines its words' digests as a rolling (Buzhash-style)
    hash does: h(w0) ^ rot(h(w1), 1 byte) ^ rot(h(w2), 2 bytes), so no shingle
    string is built or hashed. The bit counts are taken column-wise: byte i of
    every word digest forms one big integer, the shingles' byte i is three of
    those XORed at word offsets 0, 1, 2, and bit j's count is a popcount under a
    mask: about a hundred integer operations whatever the length, instead of 64
    per shingle.
    """
    if len(words) > SIMHASH_WORDS:
        half = SIMHASH_WORDS // 2
        words = words[:half] + words[-half:]
    if len(words) < 3:
        if not words:
            return 0
        digest = blake2b(" ".join(words).encode("utf-8", "surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "little")
    data = b"".join(map(_DIGESTS.__getitem__, words))
    shingles = len(words) - 2
    keep = (1 << (8 * shingles)) - 1
    cols = [int.from_bytes(data[i::8], "little") for i in range(8)]  # byte i of each word
    result = 0
    bit = 1
    for i in range(8):
        # byte i of the shingle at word k: byte i of word k, i+1 of word k+1, i+2 of k+2
        column = (cols[i] ^ (cols[(i + 1) % 8] >> 8) ^ (cols[(i + 2) % 8] >> 16)) & keep
        for count in map(int.bit_count, map(column.__and__, _BIT_MASKS)):
            if 2 * count > shingles:
                result |= bit
            bit <<= 1
    return result


# SimHashes by template id: a template's requests (what detection looks for)
# repeat one scaffold, and its SimHash costs more than the rest of its features.
_SIMHASHES: dict[str, int] = {}


def _template_simhash(template: str, words: list[str]) -> int:
    """The SimHash of the scaffold `words` whose template id is `template`."""
    known = _SIMHASHES.get(template)
    if known is not None:
        return known
    h = _simhash_words(words)
    if len(_SIMHASHES) >= _CACHE_MAX:
        _SIMHASHES.clear()
    _SIMHASHES[template] = h
    return h


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return ((a ^ b) & _MASK64).bit_count()


# ---------------------------------------------------------------------------
# Elicitation: asking for reasoning traces or grades

# How much each component, at full strength, moves the score. The score is a
# noisy-OR, 1 - prod(1 - weight * strength): monotone in every component,
# 0 when none is present, below 1 unless something is, and each component's
# share can be read off. Phrasing components are present (1) or not (0);
# parameter components are graded as their functions below say.
WEIGHTS: dict[str, float] = {
    "step_by_step": 0.35,  # asks for explicit reasoning: step by step, chain of thought
    "reasoning_format": 0.30,  # scratchpad, <thinking> tags, "before answering", final answer
    "self_check": 0.15,  # verify / double-check your answer
    "grading": 0.45,  # rubric, rate the response on a scale, which answer is better
    "thinking_budget": 0.30,  # Anthropic thinking enabled, budget_tokens / 16384
    "reasoning_effort": 0.25,  # OpenAI reasoning effort: low 0.25, medium 0.5, high 1
    "samples": 0.25,  # n > 1 choices: (n - 1) / 7, full at n = 8
    "logprobs": 0.40,  # token log-probabilities: 0.5, plus top_logprobs / 10
}
FULL_THINKING_BUDGET = 16384
_BIG = 10**9
_EFFORT = {"minimal": 0.0, "none": 0.0, "low": 0.25, "medium": 0.5, "high": 1.0, "xhigh": 1.0}

# Phrases, matched on lower-cased text; a space matches one or more whitespace
# characters (so an optional space is written \s*, never " ?").
# Each is tried only when its gate word is among the text's words: the leading
# word, or each word of a leading (?:a|b|c) group, or the words given with it.
# Phrases without a gate (Chinese, Japanese) are tried on non-ASCII text only.
# English first, then Spanish, Portuguese, German, French, Russian, Chinese, Japanese.
_Phrase = str | tuple[tuple[str, ...], str]
_PHRASES: dict[str, tuple[_Phrase, ...]] = {
    "step_by_step": (
        r"step[\s-]*by[\s-]*step",
        r"chain[\s-]of[\s-]thoughts?",
        r"(?:think|thinking|reason|reasoning) (?:it |this )?(?:through|carefully|aloud|out loud)",
        r"let['\u2019]s think",
        r"lets think",
        r"show (?:me )?(?:all )?(?:of )?(?:your|the) (?:work|reasoning|thinking|thought process"
        r"|steps|derivation)",
        r"explain (?:all )?(?:of )?(?:your|the|each|every) (?:reasoning|thinking|thought process"
        r"|steps?)",
        r"walk (?:me |us )?through (?:your|the) (?:reasoning|thinking|steps|logic)",
        r"(?:detailed|full|complete|explicit) reasoning",
        r"thought process",
        r"paso a paso",
        r"(?:explica|muestra|detalla) (?:tu|el|todo tu) razonamiento",
        r"(?:piensa|razona) (?:con cuidado|detenidamente|cuidadosamente)",
        r"cadena de pensamiento",
        r"passo a passo",
        r"schritt für schritt",
        r"schrittweise",
        r"(?:erkläre|zeige|erläutere|beschreibe) (?:deinen|ihren|den) (?:gedankengang|lösungsweg"
        r"|denkprozess|rechenweg)",
        r"(?:denk|denke|denken) (?:sie )?(?:gründlich|sorgfältig|genau) nach",
        r"étape par étape",
        r"pas à pas",
        r"(?:explique|expliquez|montre|montrez|détaille|détaillez) (?:ton|votre) raisonnement",
        r"(?:réfléchis|réfléchissez) (?:bien|attentivement|soigneusement)",
        r"chaîne de pensée",
        r"шаг за шагом",
        r"一步一步",
        r"一步步",
        r"逐步",
        r"分步",
        r"思考过程",
        r"推理过程",
        r"思维链",
        r"ステップバイステップ",
        r"段階的に",
    ),
    "reasoning_format": (
        r"scratchpad",
        r"scratch pad",
        (
            ("think", "thinking", "reasoning", "thoughts"),
            r"</?(?:think|thinking|reasoning|thoughts)>",
        ),
        r"(?:think|thinking|reasoning) tags?",
        r"before (?:answering|you answer|responding|you respond|giving (?:your|the|a) (?:final )?"
        r"answer)",
        r"intermediate (?:steps|reasoning|results|calculations)",
        r"(?:explain|justify) (?:why )?(?:each|every) step",
        r"final answer\s*(?::|(?:in|inside|within|as|on|at|after)\b)",  # a format, not a question
        (("boxed",), r"\\boxed"),
        r"antes de (?:responder|contestar)",
        r"pasos intermedios",
        r"respuesta final",
        r"bevor (?:du antwortest|sie antworten)",
        r"zwischenschritte",
        r"endgültige antwort",
        r"avant de répondre",
        r"étapes intermédiaires",
        r"réponse finale",
        r"回答之前",
        r"回答前",
        r"中间步骤",
        r"最终答案",
    ),
    "self_check": (
        r"(?:verify|check|recheck|validate) (?:your|each) (?:answer|work|solution|result"
        r"|reasoning|steps?)",
        r"double[\s-]?check",
        r"self[\s-](?:verif|check|critique|reflect|correct)",
        r"reflect on your (?:own )?(?:answer|reasoning|work|response)",
        r"(?:critique|review) your (?:own )?(?:answer|reasoning|work|response)",
        r"verifica (?:tu|la) (?:respuesta|solución)",
        r"überprüfe (?:deine|die) (?:antwort|lösung)",
        r"(?:vérifie|vérifiez) (?:ta|votre|la) (?:réponse|solution)",
        r"检查(?:你的)?(?:答案|结果)",
        r"验证(?:你的)?(?:答案|结果)",
    ),
    "grading": (
        r"(?:rubric|rubrics)",
        r"(?:rate|score|grade|evaluate|assess|judge) (?:the |this |these |each |both )?"
        r"(?:following |above |two |given )?(?:responses?|answers?|outputs?|completions?"
        r"|repl(?:y|ies)|essays?|solutions?|submissions?)",
        (("scale",), r"on a scale (?:of|from)"),
        r"(?:scoring|grading|evaluation) (?:criteria|guidelines|scale)",
        r"which (?:of the (?:two |following )?)?(?:responses?|answers?|outputs?|completions?"
        r"|assistants?) (?:is|was) (?:better|best|more)",
        r"compare (?:the )?(?:two |these |both )?(?:responses|answers|outputs|completions)",
        (("a", "b"), r"\[\[[ab]\]\]"),
        r"reward (?:model|score|signal)",
        r"preference (?:data|pairs?|labels?)",
        r"pairwise (?:comparison|preference)",
        r"(?:rúbrica|rúbricas)",
        (("escala",), r"en una escala del?"),
        r"(?:califica|evalúa|puntúa) (?:la|las|el|los|esta|estas) (?:respuestas?|soluciones?)",
        r"criterios de evaluación",
        r"cuál (?:de las )?(?:respuestas? )?es mejor",
        r"(?:bewertungsraster|bewertungskriterien|bewertungsschema)",
        (("skala",), r"auf einer skala von"),
        r"(?:bewerte|beurteile|benote) (?:die|diese|folgende|beide) (?:antworten?|lösungen?)",
        r"welche antwort ist besser",
        r"grille d['\u2019]évaluation",
        r"critères d['\u2019]évaluation",
        (("échelle",), r"sur une échelle de"),
        r"(?:évalue|évaluez|note|notez) (?:la|les|cette|ces) (?:réponses?|solutions?)",
        r"quelle réponse est (?:la )?meilleure",
        r"评分标准",
        r"评分细则",
        r"打分",
        r"哪个(?:回答|答案)更好",
        r"比较(?:以下|这两个)?(?:回答|答案)",
    ),
}
# Chinese and Japanese are written without spaces: their phrases have no gate word.
_UNSPACED_SCRIPT_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
_LEADING_WORD_RE = re.compile(r"([^\W\d_]+)(?=$|[ \[\\])")
_LEADING_GROUP_RE = re.compile(r"\(\?:([^\W\d_]+(?:\|[^\W\d_]+)*)\)(?=$|[ \[\\])")


def gate_words(phrase: _Phrase) -> tuple[str, ...]:
    """The words one of which a text must contain before `phrase` is tried (none: unspaced)."""
    if isinstance(phrase, tuple):
        return phrase[0]
    if _UNSPACED_SCRIPT_RE.match(phrase):
        return ()
    if m := _LEADING_WORD_RE.match(phrase):
        return (m[1],)
    if m := _LEADING_GROUP_RE.match(phrase):
        return tuple(m[1].split("|"))
    return ()


def _compile_phrases(
    table: Mapping[str, tuple[_Phrase, ...]],
) -> tuple[dict[str, list[tuple[str, re.Pattern[str]]]], list[tuple[str, re.Pattern[str]]]]:
    gated: dict[str, list[tuple[str, re.Pattern[str]]]] = {}
    unspaced: list[tuple[str, re.Pattern[str]]] = []
    for component, phrases in table.items():
        for phrase in phrases:
            source = (phrase[1] if isinstance(phrase, tuple) else phrase).replace(" ", r"\s+")
            gates = gate_words(phrase)
            if not gates:
                unspaced.append((component, re.compile(source)))
            group = _LEADING_GROUP_RE.match(source)
            for gate in gates:
                # A leading (?:a|b) group becomes one pattern per word, so that each
                # starts with a literal: the regex engine then skips ahead fast.
                own = (
                    gate + source[group.end() :]
                    if group and not isinstance(phrase, tuple)
                    else source
                )
                gated.setdefault(gate, []).append((component, re.compile(own)))
    return gated, unspaced


_GATED, _UNSPACED = _compile_phrases(_PHRASES)
_GATE_WORDS = frozenset(_GATED)


@dataclass(frozen=True, slots=True)
class Elicitation:
    """How strongly one request asks for reasoning traces or grades: a 0..1 score and its parts."""

    score: float = 0.0
    step_by_step: float = 0.0
    reasoning_format: float = 0.0
    self_check: float = 0.0
    grading: float = 0.0
    thinking_budget: float = 0.0
    reasoning_effort: float = 0.0
    samples: float = 0.0
    logprobs: float = 0.0

    def components(self) -> dict[str, float]:
        """The non-zero components by name (what an audit record or explanation shows)."""
        return {name: v for name in WEIGHTS if (v := getattr(self, name))}


def elicitation(fields: Mapping[str, Any], text: str) -> Elicitation:
    """Score a request's asking for reasoning or grading, from its phrasing and parameters."""
    found = dict.fromkeys(_phrase_components(text), 1.0)
    if isinstance(fields, Mapping):
        found.update(_parameters(fields))
    return _combine(found)


def _phrase_components(text: str) -> set[str]:
    """The phrasing components whose phrases occur in the text."""
    if not isinstance(text, str) or not text:
        return set()
    low = text.lower()
    found: set[str] = set()
    for gate in _GATE_WORDS.intersection(_split_words(low)):
        for component, pattern in _GATED[gate]:
            if component not in found and pattern.search(low):
                found.add(component)
    if not low.isascii():
        for component, pattern in _UNSPACED:
            if component not in found and pattern.search(low):
                found.add(component)
    return found


_NOTHING_ASKED = Elicitation()


def _combine(strengths: Mapping[str, float]) -> Elicitation:
    if not strengths:  # most requests: share one value rather than build a frozen one
        return _NOTHING_ASKED
    miss = 1.0
    for name, strength in strengths.items():
        miss *= 1.0 - WEIGHTS[name] * strength
    return Elicitation(score=round(1.0 - miss, 4), **strengths)


def _parameters(fields: Mapping[str, Any]) -> dict[str, float]:
    """Strengths of the parameter components (absent when zero)."""
    out: dict[str, float] = {}
    thinking = fields.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        budget = _number(thinking.get("budget_tokens"))
        if budget > 0:
            out["thinking_budget"] = min(1.0, budget / FULL_THINKING_BUDGET)
    effort = fields.get("reasoning_effort")
    reasoning = fields.get("reasoning")
    if effort is None and isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
    if isinstance(effort, str) and _EFFORT.get(effort.lower(), 0.0) > 0:
        out["reasoning_effort"] = _EFFORT[effort.lower()]
    n = _number(fields.get("n"))
    if n > 1:
        out["samples"] = min(1.0, (n - 1) / 7)
    logprobs = fields.get("logprobs")
    top = _number(fields.get("top_logprobs"))
    # Chat sends logprobs: true; legacy completions send the top-k count as logprobs.
    wants = logprobs is True or _number(logprobs) > 0 or top > 0
    if wants:
        out["logprobs"] = min(1.0, 0.5 + max(top, _number(logprobs)) / 10)
    return out


def _number(value: object) -> float:
    """A finite JSON number, clamped to +-1e9, else 0 (booleans are not numbers here)."""
    if isinstance(value, bool):
        return 0.0
    if isinstance(value, int):
        return float(max(-_BIG, min(value, _BIG)))
    if isinstance(value, float) and math.isfinite(value):
        return max(-_BIG, min(value, _BIG))
    return 0.0


# ---------------------------------------------------------------------------
# Client fingerprint

# Headers Envoy or the network add, or whose presence varies per request.
_NOT_CLIENT = frozenset(
    {
        "host",
        "content-length",
        "expect",  # curl sends Expect: 100-continue only for large bodies
        "x-request-id",
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "traceparent",
        "tracestate",
        "baggage",
        "b3",
        "x-ot-span-context",
        "x-amzn-trace-id",
        "x-cloud-trace-context",
        "grpc-trace-bin",
        "forwarded",
        "via",
        "x-real-ip",
    }
)
_NOT_CLIENT_PREFIXES = (":", "x-forwarded-", "x-envoy-", "x-distill-", "x-b3-", "x-datadog-")
_MAX_HEADERS = 64
_MAX_AGENT = 256
# 1.40.3 -> 1, 126.0.6478.61 -> 126: a patch release must not split one client in two.
_MINOR_VERSION_RE = re.compile(r"(\d+)(?:[._]\d+)+")


def client_fingerprint(headers: Mapping[str, str], *, ordered: bool = True) -> str:
    """16 hex digits naming the client software: its user agent (major versions) and header names.

    With `ordered`, the names count in the order they arrived (an SDK sends
    them in a fixed order); that order is only the client's when Envoy passes
    the raw header list (see docs/detection.md).
    """
    if not isinstance(headers, Mapping):
        return ""
    agent = headers.get("user-agent")
    agent = agent[:_MAX_AGENT] if isinstance(agent, str) else ""
    sent = tuple(islice(headers, _MAX_HEADERS))
    key = (ordered, agent, sent)
    if (known := _CLIENTS.get(key)) is not None:
        return known
    names = [n[:64] for n in sent if isinstance(n, str) and _from_client(n)]
    if not ordered:
        names.sort()
    text = _MINOR_VERSION_RE.sub(r"\1", agent) + "\n" + ",".join(names)
    fingerprint = blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    if len(text) <= _MAX_CACHED_CLIENT:  # a client's own header names stay small
        if len(_CLIENTS) >= _CLIENT_CACHE_MAX:
            _CLIENTS.clear()
        _CLIENTS[key] = fingerprint
    return fingerprint


def _from_client(name: str) -> bool:
    return name not in _NOT_CLIENT and not name.startswith(_NOT_CLIENT_PREFIXES)


# Fingerprints by (ordered, user agent, header names as sent): one client repeats them.
_CLIENTS: dict[tuple[bool, str, tuple[object, ...]], str] = {}
_CLIENT_CACHE_MAX = 4096
_MAX_CACHED_CLIENT = 2048


# ---------------------------------------------------------------------------
# All features of one request


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    """The detection features of one request, as `extract` computes them."""

    template_id: str = ""  # "" when the prompt has no text
    simhash: int = 0
    elicitation: Elicitation = Elicitation()
    client: str = ""
    prompt_chars: int = 0  # characters examined (at most the limit)
    truncated: bool = False  # the prompt had more text than was examined
    scaffold_words: int = 0  # short scaffolds make weak template evidence
    failed: bool = False  # a fault in extraction: the other fields are defaults

    @property
    def elicitation_score(self) -> float:
        """The 0..1 elicitation score."""
        return self.elicitation.score


def extract(
    fields: Mapping[str, Any], headers: Mapping[str, str], limit: int = DEFAULT_LIMIT
) -> RequestFeatures:
    """All features of one request, examining at most `limit` prompt characters; never raises."""
    try:
        text, truncated = _prompt(fields, limit)
        skeleton, words = _scaffold(text) if text else ("", [])
        template = template_id(skeleton)
        return RequestFeatures(
            template_id=template,
            simhash=_template_simhash(template, words),
            elicitation=elicitation(fields, text),
            client=client_fingerprint(headers),
            prompt_chars=len(text),
            truncated=truncated,
            scaffold_words=len(words),
        )
    except Exception:  # a fault in a feature must never fail the check
        return RequestFeatures(failed=True)
