"""Code-shaped slot values: identifiers, file paths, snippets, diffs, errors, tool traces.

They are plausible, not compilable: enough for prompts to carry realistic
code-like text whose exact bytes vary from one request to the next.
"""

from __future__ import annotations

import random

from authz.sim.draw import cumulative, pick, weighted

# name, file extension, identifier style, comment prefix
LANGS: tuple[tuple[str, str, str], ...] = (
    ("Python", "py", "snake"),
    ("TypeScript", "ts", "camel"),
    ("JavaScript", "js", "camel"),
    ("Go", "go", "camel"),
    ("Rust", "rs", "snake"),
    ("Java", "java", "camel"),
    ("C++", "cpp", "snake"),
    ("Kotlin", "kt", "camel"),
    ("C#", "cs", "pascal"),
    ("Ruby", "rb", "snake"),
)
_VERBS = (
    "parse",
    "merge",
    "validate",
    "compute",
    "normalize",
    "serialize",
    "dedupe",
    "schedule",
    "resolve",
    "compress",
    "tokenize",
    "rank",
    "retry",
    "paginate",
    "batch",
    "load",
    "render",
    "encode",
    "decode",
    "flatten",
    "group",
    "filter",
    "sync",
    "migrate",
    "reconcile",
    "index",
    "split",
    "throttle",
    "hydrate",
    "diff",
)
_NOUNS = (
    "config",
    "intervals",
    "user_records",
    "events",
    "payload",
    "graph",
    "matrix",
    "invoices",
    "timestamps",
    "headers",
    "paths",
    "jobs",
    "tokens",
    "sessions",
    "orders",
    "metrics",
    "edges",
    "segments",
    "permissions",
    "chunks",
    "rows",
    "messages",
    "snapshots",
    "routes",
    "prices",
    "accounts",
    "tasks",
    "logs",
    "features",
    "embeddings",
)
_DIRS = (
    "src",
    "lib",
    "app",
    "internal",
    "pkg",
    "core",
    "services",
    "api",
    "utils",
    "server",
    "worker",
    "models",
    "handlers",
    "storage",
    "cli",
)
_VARS = ("items", "result", "seen", "acc", "buf", "out", "queue", "cache", "total", "parts")


def camel(words: list[str]) -> str:
    """`parse_config` style words as parseConfig."""
    return words[0] + "".join(w.capitalize() for w in words[1:])


def _names(style: str) -> tuple[str, ...]:
    out = []
    for verb in _VERBS:
        for noun in _NOUNS:
            words = [verb, *noun.split("_")]
            if style == "camel":
                out.append(camel(words))
            elif style == "pascal":
                out.append("".join(w.capitalize() for w in words))
            else:
                out.append("_".join(words))
    return tuple(out)


_IDENTIFIERS = {style: _names(style) for style in ("snake", "camel", "pascal")}
# Directory prefixes one to three levels deep.
_PREFIXES = tuple(
    [*_DIRS]
    + [f"{a}/{b}" for a in _DIRS for b in _DIRS if a != b]
    + [f"{a}/{b}/{c}" for a in _DIRS[:5] for b in _DIRS[5:10] for c in _DIRS[10:]]
)


def identifier(rng: random.Random, style: str = "snake") -> str:
    """A function name like parse_config, in the language's style."""
    return pick(rng, _IDENTIFIERS[style])


_LANG_CUM = cumulative((30, 18, 10, 12, 8, 9, 5, 3, 3, 2))


def lang(rng: random.Random) -> tuple[str, str, str]:
    """A language (name, extension, style), weighted towards the common ones."""
    return weighted(rng, LANGS, _LANG_CUM)


def file_path(rng: random.Random, ext: str) -> str:
    """A source file path with the given extension."""
    return f"{pick(rng, _PREFIXES)}/{pick(rng, _NOUNS)}.{ext}"


# Per language: the function's head, its optional blocks (each complete), and its tail.
# {name} is the function, {v} the result, {src} the argument, {n} and {i} numbers.
_SNIPPETS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "py": (
        "def {name}({src}):\n    {v} = []\n",
        (
            "    for item in {src}:\n        if not item:\n            continue\n"
            "        {v}.append(item.strip())\n",
            "    if len({v}) > {n}:\n        {v} = {v}[:{n}]\n",
            "    {v}.sort(key=lambda x: x[{i}])\n",
            "    seen = set()\n    {v} = [x for x in {v} if not (x in seen or seen.add(x))]\n",
        ),
        "    return {v}",
    ),
    "rb": (
        "def {name}({src})\n  {v} = []\n",
        (
            "  {src}.each do |item|\n    next if item.nil?\n    {v} << item.strip\n  end\n",
            "  {v} = {v}.first({n})\n",
            "  {v}.sort_by! {{ |x| x[{i}] }}\n",
        ),
        "  {v}\nend",
    ),
    "js": (
        "function {name}({src}) {{\n  let {v} = [];\n",
        (
            "  for (const item of {src}) {{\n    if (!item) continue;\n    {v}.push(item.trim());\n"
            "  }}\n",
            "  if ({v}.length > {n}) {v} = {v}.slice(0, {n});\n",
            "  {v}.sort((a, b) => a[{i}] - b[{i}]);\n",
            "  {v} = [...new Set({v})];\n",
        ),
        "  return {v};\n}}",
    ),
    "ts": (
        "export function {name}({src}: string[]): string[] {{\n  let {v}: string[] = [];\n",
        (
            "  for (const item of {src}) {{\n    if (!item) continue;\n    {v}.push(item.trim());\n"
            "  }}\n",
            "  if ({v}.length > {n}) {v} = {v}.slice(0, {n});\n",
            "  {v} = [...new Set({v})];\n",
        ),
        "  return {v};\n}}",
    ),
    "go": (
        "func {name}({src} []string) []string {{\n\t{v} := make([]string, 0, len({src}))\n",
        (
            '\tfor _, item := range {src} {{\n\t\tif item == "" {{\n\t\t\tcontinue\n\t\t}}\n'
            "\t\t{v} = append({v}, strings.TrimSpace(item))\n\t}}\n",
            "\tif len({v}) > {n} {{\n\t\t{v} = {v}[:{n}]\n\t}}\n",
            "\tsort.Strings({v})\n",
        ),
        "\treturn {v}\n}}",
    ),
    "rs": (
        "fn {name}({src}: &[String]) -> Vec<String> {{\n    let mut {v} = Vec::new();\n",
        (
            "    for item in {src}.iter() {{\n        if item.is_empty() {{\n"
            "            continue;\n"
            "        }}\n        {v}.push(item.trim().to_string());\n    }}\n",
            "    {v}.truncate({n});\n",
            "    {v}.sort();\n    {v}.dedup();\n",
        ),
        "    {v}\n}}",
    ),
    "java": (
        "static List<String> {name}(List<String> {src}) {{\n"
        "    List<String> {v} = new ArrayList<>();\n",
        (
            "    for (String item : {src}) {{\n"
            "        if (item == null || item.isEmpty()) continue;\n"
            "        {v}.add(item.trim());\n    }}\n",
            "    if ({v}.size() > {n}) {v} = {v}.subList(0, {n});\n",
            "    Collections.sort({v});\n",
        ),
        "    return {v};\n}}",
    ),
    "kt": (
        "fun {name}({src}: List<String>): List<String> {{\n    val {v} = mutableListOf<String>()\n",
        (
            "    for (item in {src}) {{\n        if (item.isBlank()) continue\n"
            "        {v}.add(item.trim())\n    }}\n",
            "    {v}.sortBy {{ it.length }}\n",
        ),
        "    return {v}.take({n})\n}}",
    ),
    "cs": (
        "public static List<string> {name}(List<string> {src})\n{{\n"
        "    var {v} = new List<string>();\n",
        (
            "    foreach (var item in {src})\n    {{\n"
            "        if (string.IsNullOrEmpty(item)) continue;\n"
            "        {v}.Add(item.Trim());\n    }}\n",
            "    {v}.Sort();\n",
        ),
        "    return {v}.Take({n}).ToList();\n}}",
    ),
    "cpp": (
        "std::vector<std::string> {name}(const std::vector<std::string>& {src}) {{\n"
        "    std::vector<std::string> {v};\n",
        (
            "    for (const auto& item : {src}) {{\n        if (item.empty()) continue;\n"
            "        {v}.push_back(item);\n    }}\n",
            "    std::sort({v}.begin(), {v}.end());\n",
            "    if ({v}.size() > {n}) {v}.resize({n});\n",
        ),
        "    return {v};\n}}",
    ),
}


def snippet(rng: random.Random, name: str, ext: str) -> str:
    """A short, complete function in the language's syntax (plausible, not checked)."""
    head, blocks, tail = _SNIPPETS.get(ext, _SNIPPETS["js"])
    v, src = _two_vars(rng)
    keep = [b for b in blocks if rng.random() < 0.6] or [blocks[0]]
    text = head + "".join(keep) + tail
    return text.format(
        name=name, v=v, src=src, n=2 + int(rng.random() * 63), i=int(rng.random() * 4)
    )


def _two_vars(rng: random.Random) -> tuple[str, str]:
    """Two different variable names."""
    n = len(_VARS)
    i = int(rng.random() * n)
    return _VARS[i], _VARS[(i + 1 + int(rng.random() * (n - 1))) % n]


def error(rng: random.Random, ext: str, name: str, path: str) -> str:
    """An error message or stack trace line as the language would print it."""
    line = rng.randint(12, 480)
    key = pick(rng, ("user_id", "id", "timestamp", "items", "config", "token"))
    choices = {
        "py": (
            f"KeyError: '{key}'",
            "TypeError: cannot unpack non-iterable NoneType object",
            f'File "{path}", line {line}, in {name}\nIndexError: list index out of range',
            f"AttributeError: 'NoneType' object has no attribute '{key}'",
        ),
        "go": (
            f"panic: runtime error: index out of range [{line % 9}] with length {line % 9}",
            "fatal error: all goroutines are asleep - deadlock!",
            f"{path}:{line}: undefined: {name}",
        ),
        "rs": (
            "error[E0502]: cannot borrow `items` as mutable because it is also borrowed as "
            "immutable",
            f"thread 'main' panicked at {path}:{line}:9: "
            "called `Option::unwrap()` on a `None` value",
        ),
        "java": (
            f"java.lang.NullPointerException\n\tat {name}({path}:{line})",
            "java.util.ConcurrentModificationException",
        ),
    }
    generic = (
        f"TypeError: Cannot read properties of undefined (reading '{key}')",
        f"{path}:{line} uncaught exception in {name}",
        "RangeError: Maximum call stack size exceeded",
    )
    return pick(rng, choices.get(ext, generic))


def diff(rng: random.Random, path: str) -> str:
    """A small unified diff of one file."""
    start = rng.randint(1, 300)
    var, other = _two_vars(rng)
    n = rng.randint(1, 100)
    removed = pick(rng, (f"{var} = {other}[0]", f"if {var} > {n}:", f"return {var}"))
    added = pick(
        rng,
        (f"{var} = {other}[0] if {other} else None", f"if {var} >= {n}:", f"return sorted({var})"),
    )
    return (
        f"--- a/{path}\n+++ b/{path}\n@@ -{start},4 +{start},4 @@\n"
        f" def {identifier(rng)}({other}):\n-    {removed}\n+    {added}\n     return {var}"
    )


def test_name(rng: random.Random) -> str:
    """A test function name."""
    what = pick(
        rng,
        (
            "handles_empty_input",
            "rejects_bad_token",
            "keeps_order",
            "retries_once",
            "returns_none_when_missing",
            "round_trips",
            "is_idempotent",
            "times_out",
        ),
    )
    return f"test_{identifier(rng)}_{what}"


_TOOLS = (
    "read_file",
    "list_dir",
    "run_tests",
    "grep",
    "edit_file",
    "bash",
    "search_docs",
    "http_get",
    "git_diff",
    "python",
)


def tool_trace(rng: random.Random, step: str, call: str, result: str, ext: str) -> str:
    """An agent's tool calls and observations so far, `step`/`call`/`result` labelled."""
    lines = []
    for i in range(1, rng.randint(2, 6) + 1):
        tool = pick(rng, _TOOLS)
        path = file_path(rng, ext)
        if tool in ("read_file", "edit_file", "git_diff"):
            args, obs = f'path="{path}"', f"{rng.randint(20, 900)} lines"
        elif tool == "grep":
            args = f'pattern="{identifier(rng)}", dir="{path.split("/")[0]}"'
            obs = f"{rng.randint(0, 14)} matches"
        elif tool == "run_tests":
            failed = rng.randint(0, 5)
            args, obs = (
                f'target="{path.rsplit("/", 1)[0]}"',
                f"{rng.randint(20, 400)} passed, {failed} failed",
            )
        else:
            args, obs = f'"{identifier(rng)} --verbose"', f"exit code {pick(rng, (0, 0, 1, 2))}"
        lines.append(f"{step} {i}: {call} {tool}({args})\n{result}: {obs}")
    return "\n".join(lines)
