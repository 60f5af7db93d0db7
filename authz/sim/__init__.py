"""`distill-guard simulate`: a seeded simulator of benign users and distillation campaigns.

It writes an accounts file the server loads, a time-ordered traffic file of
model API requests, ground-truth labels per account, the scenario's knobs and
counts, and the reference rules the traffic is meant to be judged against
(docs/simulate.md). Every random choice comes from `random.Random` streams
derived from the seed, so the same seed and knobs give byte-identical files.

Modules, in the order a run uses them:

| module | job |
| --- | --- |
| `knobs.py` | the knobs, their defaults and the named presets |
| `networks.py` | networks of geo/demo.csv and addresses drawn inside them |
| `clients.py` | client fingerprints (SDK headers, JSON style) |
| `population.py` | the account record and the benign population |
| `campaign.py` | campaign accounts, proxy pools, the scheduler, bans and replacements |
| `schedule.py` | when benign accounts send their requests |
| `benign_topics.py`, `benign_text.py` | ordinary users', researchers' and CI jobs' prompts |
| `banks.py`, `bank_en.py`, `bank_es.py` | the campaign phrase banks |
| `campaign_text.py` | the template grammar, slot filling and paraphrase |
| `code.py` | code-shaped slot values: names, paths, snippets, diffs, errors, traces |
| `draw.py` | fast random draws for the per-request path |
| `render.py` | one request line of the traffic file |
| `run.py` | the whole run: build, schedule, render, write |
| `cli.py` | the `simulate` subcommand |
"""
