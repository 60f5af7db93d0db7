"""Case files: what an investigator needs about a cluster, an account or an entity.

`distill-guard case` reads the audit trail (JSON lines files or the Redis
stream) and writes Markdown, one self-contained HTML file, JSON, and an
indicator export for other providers. The modules, in the order data flows:

    source      the subject, the period, and the records of a file or stream, read in passes
    evidence    the hash-chain check of the whole source, and where the case's records sit
    redact      template examples: the masked scaffold by default, raw text when asked
    collect     per-account and per-indicator tallies of the case's records, as the case JSON
    indicators  how much other accounts use each indicator, and the JSON lines export
    build       the passes over the source, and the case JSON
    document    the parts of a case document: sections of paragraphs, warnings and tables
    sections    the case JSON as those sections, in reading order
    render      those sections as Markdown or HTML, and the volume chart
    cli         the command line

See docs/case.md for every section, the JSON keys and the indicator format.
"""

from __future__ import annotations
