"""The two English campaign vocabularies: `en-plain` (direct) and `en-formal` (wordy)."""

from __future__ import annotations

from authz.sim.banks import Bank

PLAIN = Bank(
    name="en-plain",
    labels={
        "task": ("Task", "What to do"),
        "context": ("Context", "Background"),
        "constraints": ("Requirements", "Rules"),
        "reasoning": ("Reasoning", "How to think"),
        "output": ("Output", "Answer format"),
    },
    role=(
        (
            "You are an expert {lang} engineer.",
            "Act as an experienced {lang} developer.",
            "Pretend you are a senior {lang} programmer.",
        ),
        (
            "You are a careful software engineer who explains their thinking.",
            "You're a meticulous engineer who always explains how they got to an answer.",
        ),
        (
            "You are a coding assistant helping with a production codebase.",
            "You help engineers who work on a large production codebase.",
        ),
        (
            "You are an agent that can call tools to change a repository.",
            "You are an agent with tool access to a code repository.",
        ),
    ),
    tasks={
        "implement": (
            (
                "Implement {component} in {lang}.",
                "Write {component} in {lang}.",
                "Build {component} using {lang}.",
            ),
            (
                "Write a {lang} function `{func}` that works as {component}.",
                "Create the function `{func}` in {lang}; it should behave like {component}.",
            ),
            (
                "Implement `{func}` in `{file}` so that it provides {component}.",
                "Fill in `{func}` in `{file}` to provide {component}.",
            ),
        ),
        "refactor": (
            (
                "Refactor the following {lang} code to be cleaner and faster.",
                "Rewrite this {lang} code so it is cleaner and runs faster.",
            ),
            (
                "Refactor `{func}` in `{file}` without changing its behaviour.",
                "Restructure `{func}` from `{file}` while keeping its behaviour identical.",
            ),
            (
                "Split this function into smaller, testable pieces.",
                "Break this function up into small pieces that are easy to test.",
            ),
        ),
        "debug": (
            (
                "The following {lang} code fails with the error below. Find the bug and fix it.",
                "This {lang} code throws the error shown below. Locate the bug and fix it.",
            ),
            (
                "`{func}` in `{file}` crashes in production. Diagnose the root cause.",
                "Production crashes in `{func}` (`{file}`). Work out the root cause.",
            ),
            (
                "Explain why this code produces the error and give a corrected version.",
                "Say why this code raises this error and provide a fixed version.",
            ),
        ),
        "agent": (
            (
                "Here is the tool-call trace of an agent working on a {lang} repository. Decide "
                "the next action.",
                "Below is what an agent working on a {lang} repo has done so far. Choose its next "
                "action.",
            ),
            (
                "Continue this agent trajectory: pick the next tool call and justify it.",
                "Extend this agent trajectory with the next tool call, and justify the choice.",
            ),
            (
                "Given the observations so far, what should the agent do next to {goal}?",
                "Based on the observations so far, what is the agent's best next step to {goal}?",
            ),
        ),
        "plan": (
            (
                "Write a detailed multi-step plan to {goal}.",
                "Draft a detailed plan, step by step, to {goal}.",
            ),
            (
                "Break the work needed to {goal} into ordered steps with the tools you would use.",
                "Split the work to {goal} into ordered steps and name the tools for each.",
            ),
            (
                "Plan how an agent with shell and editor access should {goal}.",
                "Lay out how an agent that can use a shell and an editor would {goal}.",
            ),
        ),
        "grade": (
            (
                "Grade the two answers below to the programming question.",
                "Score both answers to the coding question below.",
            ),
            (
                "Evaluate each candidate solution against the rubric.",
                "Judge each candidate solution using the rubric.",
            ),
            (
                "Act as a reward model: rate which answer is better and by how much.",
                "Behave like a reward model and say which answer is better, and by how much.",
            ),
        ),
    },
    context=(
        (
            "The code runs in a service handling {scale} requests per second.",
            "This runs inside a service that serves {scale} requests per second.",
        ),
        (
            "We use {lang} with the standard library only.",
            "Only the {lang} standard library is available.",
        ),
        (
            "The repository has about {n} thousand lines and CI runs on every commit.",
            "The repo is roughly {n}k lines long, with CI on each commit.",
        ),
        (
            "Assume inputs can be very large and partially malformed.",
            "Inputs may be huge and sometimes malformed.",
        ),
    ),
    constraints=(
        (
            "Handle all edge cases, including empty input.",
            "Cover every edge case, empty input included.",
        ),
        (
            "Keep the time complexity at O(n log n) or better.",
            "Stay within O(n log n) time or better.",
        ),
        ("Do not use external libraries.", "No third-party libraries."),
        ("Add type annotations everywhere.", "Annotate all types."),
        ("Write unit tests for the main paths.", "Include unit tests for the main code paths."),
        ("Make the code thread-safe.", "The code must be safe to call from several threads."),
        ("Keep memory usage bounded.", "Memory use must stay bounded."),
        ("Explain each design decision.", "Justify every design choice you make."),
        ("Prefer readability over cleverness.", "Favour readable code over clever code."),
        (
            "Consider at least two alternative approaches and compare them.",
            "Compare at least two other approaches.",
        ),
    ),
    cot=(
        (
            "Think step by step and show all of your reasoning before the final answer.",
            "Go step by step and write out all your reasoning before giving the answer.",
        ),
        (
            "Show your full chain of thought, including steps that turned out wrong.",
            "Write down your whole chain of thought, even the steps that were mistakes.",
        ),
        (
            "Before answering, reason through the problem in detail.",
            "Reason about the problem in depth before you answer.",
        ),
        (
            "Explain every intermediate step; do not skip anything.",
            "Spell out each intermediate step and skip nothing.",
        ),
        ("Think out loud as you work through this.", "Think aloud while you work on this."),
        (
            "Describe your reasoning process in full, then give the solution.",
            "Lay out your complete reasoning first, then the solution.",
        ),
        (
            "Work through this methodically and show the work for each step.",
            "Be methodical and show your work for every step.",
        ),
    ),
    grade_cot=(
        (
            "Explain your reasoning for each score before giving it.",
            "Give the reasoning behind each score before the score itself.",
        ),
        (
            "Compare the answers point by point and show how you reached the verdict.",
            "Go through the answers point by point and show how you got to your verdict.",
        ),
    ),
    formats=(
        (
            "Put the final code in a single code block at the end.",
            "End with the final code in one code block.",
        ),
        (
            "Answer with sections: Analysis, Plan, Code, Tests.",
            "Structure the answer as Analysis, Plan, Code and Tests.",
        ),
        (
            "Return the result as JSON with the keys reasoning and answer.",
            "Give the result as JSON with keys reasoning and answer.",
        ),
        ("Number every step of your reasoning.", "Number each reasoning step."),
        ("Finish with a one-line summary.", "Close with a single-line summary."),
    ),
    scale=(
        ("Use a scale from 1 to {top}.", "Score on a 1 to {top} scale."),
        (
            "For each criterion give a score and a short justification.",
            "Give each criterion a score plus a brief justification.",
        ),
        ("Finish with a verdict: A, B or tie.", "End with your verdict: A, B or tie."),
    ),
    criteria=(
        "correctness",
        "efficiency",
        "readability",
        "handling of edge cases",
        "test coverage",
        "security",
        "faithfulness to the specification",
        "clarity of explanation",
    ),
    rubric=("Rubric:", "Criteria:", "Score on:"),
    components=(
        "an LRU cache with per-entry expiry",
        "a token bucket rate limiter",
        "a trie for prefix search",
        "a thread-safe job queue with retries",
        "a JSON schema validator",
        "an interval tree",
        "a consistent hashing ring",
        "a streaming CSV parser",
        "a bloom filter",
        "a priority scheduler for background jobs",
        "a line diff of two text files",
        "a circuit breaker for HTTP calls",
        "a union-find structure with path compression",
        "a tiny SQL query planner",
        "a markdown to HTML converter",
        "a B-tree index",
        "an append-only event store",
        "a rope for a text editor",
        "a shortest path solver on a weighted graph",
        "a package dependency resolver",
        "a websocket chat server",
        "a polite web crawler",
        "a Raft leader election",
        "a ring buffer logger",
    ),
    goals=(
        "migrate the build from Makefiles to Bazel",
        "add pagination to the REST API",
        "fix the flaky integration tests in CI",
        "add OAuth2 login to the web app",
        "split the billing module into its own service",
        "add structured logging everywhere",
        "cut the Docker image size in half",
        "port the data pipeline to async IO",
        "put a cache in front of the database",
        "set up end-to-end tests for checkout",
        "remove a deprecated dependency from every module",
        "add retries with backoff to every outbound HTTP call",
    ),
    trace=("Step", "call", "Observation"),
    answers=("Question", "Answer A", "Answer B"),
    synonyms={
        "detailed": ("thorough", "in-depth"),
        "every": ("each",),
        "Explain": ("Describe",),
        "fix": ("repair", "correct"),
        "answer": ("response", "reply"),
        "reasoning": ("thinking", "logic"),
        "Write": ("Produce", "Create"),
        "show": ("display", "present"),
        "problem": ("task", "question"),
        "cleaner": ("tidier", "simpler"),
        "final": ("last", "concluding"),
        "better": ("stronger", "superior"),
        "short": ("brief", "concise"),
        "all": ("the whole of",),
    },
)

FORMAL = Bank(
    name="en-formal",
    labels={
        "task": ("Objective", "Assignment"),
        "context": ("Background information", "Situation"),
        "constraints": ("Constraints", "Conditions to observe"),
        "reasoning": ("Method", "Expected reasoning"),
        "output": ("Deliverable", "Expected deliverable"),
    },
    role=(
        (
            "In your capacity as a principal {lang} architect, please assist with the following.",
            "Kindly assume the role of a principal architect specialising in {lang}.",
        ),
        (
            "You will respond as a rigorous technical expert whose conclusions are fully "
            "justified.",
            "Please respond as a rigorous specialist who justifies every conclusion.",
        ),
        (
            "Consider yourself a member of a platform team maintaining critical infrastructure.",
            "Imagine that you belong to a platform team responsible for critical systems.",
        ),
    ),
    tasks={
        "implement": (
            (
                "Please provide a complete implementation of {component}, written in {lang}.",
                "Kindly produce a full {lang} implementation of {component}.",
            ),
            (
                "It is required that the routine `{func}` be implemented in {lang} as {component}.",
                "The routine `{func}` must be realised in {lang} and must function as {component}.",
            ),
            (
                "Within the module `{file}`, please complete `{func}` so that it constitutes "
                "{component}.",
                "Please complete `{func}`, located in `{file}`, such that it constitutes "
                "{component}.",
            ),
        ),
        "refactor": (
            (
                "Please restructure the {lang} source below with a view to clarity and "
                "performance.",
                "The {lang} source below ought to be reorganised for clarity and performance.",
            ),
            (
                "Kindly refactor `{func}` (defined in `{file}`) while preserving its observable "
                "behaviour.",
                "Please reorganise `{func}`, found in `{file}`, without altering its observable "
                "behaviour.",
            ),
            (
                "Decompose the routine below into smaller units, each of which can be tested in "
                "isolation.",
                "Please divide the routine below into smaller units that may be tested "
                "independently.",
            ),
        ),
        "debug": (
            (
                "The {lang} excerpt below terminates with the error reproduced underneath. Kindly "
                "identify and correct the defect.",
                "Execution of the {lang} excerpt below ends in the reported error; please isolate "
                "the defect and remedy it.",
            ),
            (
                "A production incident has been traced to `{func}` in `{file}`. Please determine "
                "its underlying cause.",
                "An incident in production originates in `{func}` within `{file}`; kindly "
                "establish "
                "the underlying cause.",
            ),
            (
                "Please account for the error below and supply a corrected revision.",
                "Kindly explain the origin of the error below and furnish a corrected revision.",
            ),
        ),
        "agent": (
            (
                "The transcript below records the actions of an autonomous agent operating on a "
                "{lang} repository. Please determine its most appropriate subsequent action.",
                "Below is a record of an autonomous agent's actions on a {lang} repository; kindly "
                "select the most appropriate next action.",
            ),
            (
                "Please extend the trajectory below by one further tool invocation, with a "
                "justification.",
                "Kindly propose the next tool invocation for the trajectory below, and justify it.",
            ),
            (
                "In light of the observations recorded so far, which action would best advance the "
                "agent's objective to {goal}?",
                "Having regard to the observations so far, which action best advances the "
                "objective "
                "to {goal}?",
            ),
        ),
        "plan": (
            (
                "Please prepare a comprehensive, sequenced plan in order to {goal}.",
                "Kindly draw up a comprehensive plan, in sequence, in order to {goal}.",
            ),
            (
                "Please decompose the effort required to {goal} into ordered phases, specifying "
                "the "
                "tooling for each.",
                "The effort required to {goal} should be decomposed into ordered phases, with the "
                "tooling specified for each.",
            ),
        ),
        "grade": (
            (
                "Please assess the two responses to the programming question reproduced below.",
                "Kindly appraise both responses to the programming question reproduced below.",
            ),
            (
                "Each candidate response is to be evaluated with reference to the rubric.",
                "Please evaluate each candidate response with reference to the rubric.",
            ),
            (
                "Acting as a preference model, please indicate which response is superior and to "
                "what degree.",
                "In the manner of a preference model, kindly state which response is superior and "
                "to what extent.",
            ),
        ),
    },
    context=(
        (
            "The component in question serves approximately {scale} requests per second.",
            "This component handles in the order of {scale} requests per second.",
        ),
        (
            "The codebase comprises some {n} thousand lines and is subject to continuous "
            "integration.",
            "Approximately {n} thousand lines make up the codebase, which is continuously "
            "integrated.",
        ),
        (
            "It should be assumed that inputs may be extremely large or partially corrupted.",
            "Inputs are to be treated as potentially extremely large or partially corrupted.",
        ),
    ),
    constraints=(
        (
            "All boundary conditions must be addressed, the empty input among them.",
            "Every boundary condition, including empty input, must be addressed.",
        ),
        (
            "Asymptotic running time must not exceed O(n log n).",
            "The running time must remain within O(n log n) asymptotically.",
        ),
        (
            "Only the standard library may be relied upon.",
            "Reliance on third-party packages is not permitted.",
        ),
        (
            "Every function signature must carry complete type information.",
            "Complete type information is required on all signatures.",
        ),
        (
            "Accompanying unit tests are expected for the principal code paths.",
            "Please supply unit tests covering the principal code paths.",
        ),
        (
            "Concurrent invocation must be safe.",
            "The implementation must tolerate concurrent invocation.",
        ),
        (
            "Each design decision ought to be justified explicitly.",
            "Please justify each design decision explicitly.",
        ),
        (
            "At least two alternative designs should be weighed against one another.",
            "Please weigh no fewer than two alternative designs.",
        ),
    ),
    cot=(
        (
            "Please set out your reasoning in full, step by step, prior to stating any conclusion.",
            "Kindly present your complete reasoning, one step at a time, before any conclusion.",
        ),
        (
            "Your response should make every inference explicit, omitting nothing.",
            "Please render each inference explicit, without omission.",
        ),
        (
            "It is essential that your complete chain of reasoning be made visible.",
            "Your entire chain of reasoning must be made visible.",
        ),
        (
            "Please deliberate at length and document each stage of your deliberation.",
            "Kindly deliberate thoroughly and record every stage of that deliberation.",
        ),
        (
            "Before proposing a solution, please analyse the problem exhaustively in writing.",
            "Prior to any solution, please provide a written, exhaustive analysis of the problem.",
        ),
    ),
    grade_cot=(
        (
            "Please substantiate each score with explicit reasoning before it is stated.",
            "Each score should be preceded by the reasoning that substantiates it.",
        ),
        (
            "Kindly document the comparison in detail and show how the verdict follows.",
            "Please record the comparison in detail, demonstrating how the verdict follows.",
        ),
    ),
    formats=(
        (
            "The deliverable should conclude with the final source in a single block.",
            "Please conclude with the final source contained in a single block.",
        ),
        (
            "Kindly organise the response under the headings Analysis, Design, Implementation and "
            "Verification.",
            "The response should be organised into Analysis, Design, Implementation and "
            "Verification.",
        ),
        (
            "Please emit a JSON object containing the fields rationale and result.",
            "The output ought to be a JSON object with the fields rationale and result.",
        ),
        (
            "Please enumerate each step of the reasoning.",
            "Each step of the reasoning should be enumerated.",
        ),
    ),
    scale=(
        (
            "Scores are to be assigned on a scale of 1 to {top}.",
            "Please assign scores on a 1 to {top} scale.",
        ),
        (
            "Every criterion requires a score and a concise rationale.",
            "Please provide a score and a concise rationale for every criterion.",
        ),
        (
            "Please conclude by stating a preference for A, for B, or for neither.",
            "The assessment should end with a stated preference: A, B, or neither.",
        ),
    ),
    criteria=(
        "functional correctness",
        "computational efficiency",
        "maintainability",
        "treatment of boundary conditions",
        "quality of the accompanying tests",
        "robustness against misuse",
        "adherence to the stated requirements",
        "lucidity of the exposition",
    ),
    rubric=("Evaluation rubric:", "Assessment criteria:"),
    components=(
        "a least-recently-used cache supporting expiry",
        "a token-bucket throttling mechanism",
        "a prefix tree",
        "a concurrent work queue with retry semantics",
        "a validator for JSON Schema documents",
        "an interval tree",
        "a consistent-hashing ring",
        "an incremental CSV reader",
        "a Bloom filter",
        "a prioritised background-task scheduler",
        "a circuit breaker for remote calls",
        "a disjoint-set forest",
        "a rudimentary relational query planner",
        "a B-tree",
        "an event-sourced persistence layer",
        "a dependency resolution engine",
        "a leader election protocol in the style of Raft",
    ),
    goals=(
        "transition the build system to Bazel",
        "introduce pagination throughout the public API",
        "eliminate intermittent failures in the integration suite",
        "introduce single sign-on via OAuth2",
        "extract invoicing into an independent service",
        "adopt structured logging across all services",
        "halve the size of the container image",
        "move the ingestion pipeline to asynchronous IO",
        "introduce a caching tier ahead of the primary database",
    ),
    trace=("Action", "invocation of", "Result"),
    answers=("Problem statement", "Response A", "Response B"),
    synonyms={
        "Please": ("Kindly", "We ask that you"),
        "complete": ("entire", "full"),
        "comprehensive": ("exhaustive", "thorough"),
        "must": ("shall",),
        "ought to": ("should",),
        "approximately": ("roughly", "about"),
        "response": ("reply", "submission"),
        "reasoning": ("argumentation", "line of reasoning"),
        "determine": ("establish", "ascertain"),
        "explicit": ("overt", "unambiguous"),
        "assess": ("evaluate", "appraise"),
    },
)
