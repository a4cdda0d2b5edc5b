"""`fmnist <step> [flags]`: one console command for every step; each step is also `python -m jobs.<step>`."""

import importlib
import sys
from collections.abc import Sequence

# Subcommand -> module under jobs/. Modules import lazily: `fmnist --help` stays instant.
STEPS = {
    "prepare": "jobs.prepare",
    "prepare-images": "jobs.prepare_images",
    "migrate-tables": "jobs.migrate_tables",
    "query": "jobs.query",
    "report": "jobs.report",
    "train": "jobs.train",
    "model": "jobs.model",
    "score": "jobs.score",
    "record-failure": "jobs.record_failure",
    "status": "jobs.status",
    "run-context": "jobs.run_context",
    "pipeline": "jobs.pipeline",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STEPS:
        known = ", ".join(STEPS)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"error: unknown step {argv[0]!r}; steps: {known}", file=sys.stderr)
            return 2
        print(f"usage: fmnist <step> [flags]   steps: {known}\n       fmnist <step> --help")
        return 0 if argv else 2
    return importlib.import_module(STEPS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
