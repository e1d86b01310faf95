"""Mutation testing of the code that produces reported numbers; run it with
``nox -s mutation`` (about 30 minutes on 2 cores).

mutmut 3 (configured in pyproject.toml ``[tool.mutmut]``: the package it copies to ``mutants/``,
the files it mutates and the fast test selection) makes one mutant per small change of a function
in :data:`SCOPE` and, for each, runs only the tests that called that function in a first clean
run. This script runs mutmut on the scope, then reports: total, killed (a test failed or timed
out), survived (no test failed, or no test calls the function) and equivalent (listed in
EQUIVALENT.md with why it changes nothing observable), and the mutation score
killed / (total - equivalent). It exits 1 when a mutant survives that EQUIVALENT.md does not list,
or when EQUIVALENT.md lists one that no longer exists or was killed. :data:`PENDING` modules are
mutated and counted on a line of their own, without failing the session.

    python tests/mutation/mutation.py [--max-children N] [--keep] [--report] [GLOB ...]

``GLOB``s narrow the run to some mutants (mutmut names, e.g. ``'kokorozoo.data.splits.*'``);
``--keep`` reuses ``mutants/`` (its recorded test mapping) instead of starting afresh; ``--report``
only reports the last run.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MUTANTS = REPO / "mutants"
EQUIVALENT = Path(__file__).with_name("EQUIVALENT.md")


def _methods(module: str, cls: str, *names: str) -> tuple[str, ...]:
    return tuple(f"kokorozoo.{module}.xǁ{cls}ǁ{name}__mutmut_*" for name in names)


#: What is mutated and held to the rule, as mutmut mutant-name patterns: the metric classes and
#: collections, the decision rules, the answer parser, the splits, the label masks, the classical
#: baselines and the dialogue statistics they read, the result writer and schema, and the tasks'
#: (the classification base's too) test and predict paths (their training, validation and export code is not a reported number).
SCOPE: tuple[str, ...] = (
    "kokorozoo.metrics.*",  # scores.py, text.py, rules.py (decision rules)
    "kokorozoo.data.score_format.*",
    "kokorozoo.data.splits.*",
    "kokorozoo.data.encoding.*",
    "kokorozoo.evaluation.baselines.*",  # the score baseline and the response baselines
    "kokorozoo.data.stats.x_dialogue_statistics__mutmut_*",  # the baseline's (and the heads') statistics
    *_methods("tasks.score", "_ScoreTask", "__init__", "prediction_rows", "on_test_epoch_start",
              "update_test_metrics", "test_figures", "score_constant", "training_modes"),
    "kokorozoo.tasks.score.x_summary__mutmut_*",
    *_methods("tasks.score", "ScoreTask", "__init__", "infer", "answer_distribution", "answer_form"),
    *_methods("tasks.score", "ScoreHeadsTask", "item_logits", "infer", "_standardise_on"),
    *_methods("tasks.response", "ResponseTask", "__init__", "infer", "prediction_rows", "update_test_metrics",
              "test_figures"),
    *_methods("tasks.classification", "ClassificationTask", "__init__", "prediction_rows", "update_test_metrics",
              "test_figures", "score_constant", "head_description"),
    "kokorozoo.tasks.classification.x_classification_metrics__mutmut_*",
    "kokorozoo.evaluation.writer.*",  # rows gathered, baselines added, the files written
    "kokorozoo.evaluation.results.*",  # metrics.json both ways, mean ± std over seeds
    *_methods("tasks.base", "Task", "test_step", "predict_step"),
)  # fmt: skip

#: Mutated and reported, but not yet held to the rule: a module waits here while it has no tests
#: fast enough to run per mutant, or until its equivalent mutants are listed.
PENDING: tuple[str, ...] = ()

#: mutmut's exit codes per mutant (mutmut.stats.status_by_exit_code), folded into what counts here:
#: a mutant is killed when a test failed (1, or 3: pytest's internal error) or ran out of time.
KILLED = {1: "killed", 3: "killed", 24: "timeout", -24: "timeout", 36: "timeout", 152: "timeout", 255: "timeout",
          -9: "timeout"}  # fmt: skip
SURVIVED = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}
MUTANT_ID = re.compile(r"`(kokorozoo\.[^`\s]+__mutmut_\d+)`")


def in_scope(name: str, patterns: tuple[str, ...] = SCOPE) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def results() -> dict[str, int | None]:
    """mutmut's exit code of every mutant it made in the last run, by mutant name."""
    codes: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.glob("kokorozoo/**/*.py.meta")):
        codes.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return codes


def equivalent() -> set[str]:
    """The mutants EQUIVALENT.md names (each on a line with its reason)."""
    return set(MUTANT_ID.findall(EQUIVALENT.read_text(encoding="utf-8"))) if EQUIVALENT.exists() else set()


def status(code: int | None) -> str:
    return KILLED.get(code) or SURVIVED.get(code) or f"suspicious ({code})"


def report(patterns: tuple[str, ...], pending: tuple[str, ...] = ()) -> int:
    every = results()
    waiting = Counter(status(c) for k, c in every.items() if in_scope(k, pending) and not in_scope(k, patterns))
    if waiting:
        print("\nnot yet held to the rule (PENDING): " + ", ".join(f"{s} {n}" for s, n in sorted(waiting.items())))
    codes = {k: v for k, v in every.items() if in_scope(k, patterns)}
    if not codes:
        print("no mutants in scope: run mutmut first", file=sys.stderr)
        return 2
    listed = equivalent()
    by_file = Counter(k.split(".x")[0] for k in codes)
    statuses = Counter(status(c) for c in codes.values())
    killed = sum(n for s, n in statuses.items() if s in ("killed", "timeout"))
    survivors = sorted(k for k, c in codes.items() if status(c) not in ("killed", "timeout"))
    unexplained = [k for k in survivors if k not in listed]
    stale = sorted(k for k in listed if in_scope(k, patterns) and (k not in codes or k not in survivors))
    equivalent_here = len(set(survivors) & listed)
    print("\nmutants by module: " + ", ".join(f"{m} {n}" for m, n in sorted(by_file.items())))
    print("statuses: " + ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())))
    print(
        f"MUTATION total {len(codes)}  killed {killed}  survived {len(survivors)}"
        f" (equivalent {equivalent_here}, unexplained {len(unexplained)})"
        f"  score {100 * killed / max(len(codes) - equivalent_here, 1):.1f}%"
    )
    for name in unexplained:
        print(f"  survived, not in {EQUIVALENT.name}: {name} ({status(codes[name])})")
    for name in stale:
        print(f"  listed in {EQUIVALENT.name} but {'killed' if name in codes else 'no longer made'}: {name}")
    return 1 if unexplained or stale else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="*", help="mutant-name patterns (default: the whole scope)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ from the last run")
    parser.add_argument("--report", action="store_true", help="only report the last run")
    args = parser.parse_args(argv)
    patterns, pending = (tuple(args.patterns), ()) if args.patterns else (SCOPE, PENDING)
    if not args.report:
        if not args.keep and MUTANTS.exists():
            shutil.rmtree(MUTANTS)
        from kokorozoo.data import find_root

        env = {
            **os.environ,
            "KOKOROCHAT_ROOT": str(find_root()),  # the tests run inside mutants/, away from ../shared
            "OMP_NUM_THREADS": "1",  # mutmut forks a worker per mutant: no thread pools to inherit
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
        start = time.monotonic()
        run = [mutmut, "run", f"--max-children={args.max_children}", *patterns, *pending]
        code = subprocess.call(run, cwd=REPO, env=env)
        print(f"\nmutmut run exited {code} after {time.monotonic() - start:.0f} s")
        if code:
            return code
    return report(patterns, pending)


if __name__ == "__main__":
    sys.exit(main())
