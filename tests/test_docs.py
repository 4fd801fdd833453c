"""The docs cannot drift from the repository: README.md and every page of docs/ are read as a
user would follow them, and each claim a machine can check is checked.

- every repository path cited in code (`imcap/...`, `stages/...`, `tests/...`, `dvc.yaml`, ...)
  exists, and every test named as `tests/x.py::test_y` (or `::test_y` after such a path) is
  defined there; every `python -m stages.x` module exists;
- every relative link points at a file that exists, and every `#anchor` at one of its headings
  (GitHub's slugs);
- every `dvc exp run ... -S key=value` validates against the params models: `params.yaml` with
  the settings applied, as DVC applies them, through `imcap.params.parse_params` (a `$var` or
  `<placeholder>` value keeps the key's default: the key must still exist);
- every `make TARGET` is a target of the Makefile; every `imcap SUBCOMMAND` exists in
  `imcap.cli.build_parser()`, with every `--option` given to it;
- the convention for defaults: a Markdown table whose header has a `param` and a `default`
  column lists one `key` per row and its default as one code span, equal to `params.yaml`;
- no history or process words ("issue 12", "before issue", "was measured before", "session");
- the README stays a landing page and links every page of docs/.

Code is what sits in backticks or in fenced blocks; prose is not checked for commands. Each check
is a function from a document to its problems; `test_each_check_catches_a_planted_error` feeds
each one a document with one planted error.
"""

from __future__ import annotations

import argparse
import copy
import glob
import re
import shlex
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import pytest
import yaml

from imcap.params import parse_params

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 160

FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)
SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# A repository path: under one of the project's folders, or one of its top-level files.
# `.imcap/train`, `models:/imcap/1`, `/data/x` and `$IMCAP_CACHE/...` are not repository paths.
PATH = re.compile(r"(?<![\w.$/~:<-])((?:imcap|stages|tests|benchmarks|scripts|docs|plots|\.ci)/"
                  r"[\w.{},*/-]*|(?:dvc\.yaml|dvc\.lock|params\.yaml|Makefile|pyproject\.toml|"
                  r"README\.md)(?![\w.]))(::\w+)?")
TEST_NAME = re.compile(r"(?<![\w/.])::(\w+)")
MODULE = re.compile(r"(?:^|\s)-m\s+((?:stages|imcap|benchmarks)(?:\.\w+)+)")
MAKE = re.compile(r"(?<![\w./-])make((?:\s+[A-Z_]+=(?:\"[^\"]*\"|'[^']*'|\S+))*)\s+([a-z][\w-]*)")
IMCAP = re.compile(r"(?<![\w./:=-])imcap\s+([a-z][\w-]*)([^#;|&]*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")
DVC_EXP_RUN = re.compile(r"\bdvc\s+exp\s+run\b")
HISTORY = re.compile(r"\bissue[ -]?#?\d+|\bbefore issue\b|\bwas measured before\b|\bsession\b"
                     r"|\bmission\b", re.I)
PLACEHOLDER = re.compile(r"^(\$\w+|\$\{\w+\}|<[^>]*>)$")


@dataclass(frozen=True)
class Doc:
    name: str  # as the problems name it
    text: str
    folder: Path  # where its relative links start

    @classmethod
    def read(cls, path: Path) -> Doc:
        return cls(str(path.relative_to(REPO)), path.read_text(encoding="utf-8"), path.parent)

    @cached_property
    def prose(self) -> str:
        """The text without its fenced blocks (each block's lines kept, blank)."""
        return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), self.text)

    @cached_property
    def code(self) -> list[str]:
        """Every inline code span (its line breaks as spaces) and every logical line of every
        fenced block (lines ending in a backslash joined to the next)."""
        spans = [" ".join(m.group(1).split()) for m in SPAN.finditer(self.prose)]
        lines = []
        for block in FENCE.finditer(self.text):
            lines.extend(line.strip() for line in block.group(2).replace("\\\n", " ").splitlines()
                         if line.strip())
        return spans + lines


def docs() -> list[Doc]:
    return [Doc.read(path) for path in DOCS]


# -- paths and links -------------------------------------------------------------------------


def _expand(path: str) -> list[str]:
    """`a/{b,c}.py` -> `a/b.py`, `a/c.py`."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    return [expanded for option in match.group(1).split(",")
            for expanded in _expand(path[:match.start()] + option + path[match.end():])]


def _defines(path: Path, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\b", path.read_text(),
                     re.M) is not None


def path_problems(doc: Doc, root: Path = REPO) -> list[str]:
    problems = []
    last_test_file: Path | None = None  # what a `::test_name` that follows it names a test of
    for code in doc.code:
        for match in PATH.finditer(code):
            cited, test = match.group(1).rstrip(".,"), match.group(2)
            for path in _expand(cited):
                found = glob.glob(path, root_dir=root) if "*" in path else (
                    [path] if (root / path).exists() else [])
                if not found:
                    problems.append(f"{doc.name}: `{path}` does not exist")
                elif path.endswith(".py") and path.startswith("tests/"):
                    last_test_file = root / path
                if test and found and not _defines(root / path, test[2:]):
                    problems.append(f"{doc.name}: {path} defines no {test[2:]}")
        for match in TEST_NAME.finditer(code):
            if match.start() and code[match.start() - 1] not in " ,":
                continue  # part of a `tests/x.py::name` already checked
            if last_test_file is None:
                problems.append(f"{doc.name}: `::{match.group(1)}` follows no test file")
            elif not _defines(last_test_file, match.group(1)):
                problems.append(f"{doc.name}: {last_test_file.relative_to(root)} defines no "
                                f"{match.group(1)}")
        for match in MODULE.finditer(code):
            module = match.group(1).replace(".", "/")
            if not ((root / f"{module}.py").is_file() or (root / module / "__init__.py").is_file()):
                problems.append(f"{doc.name}: module `{match.group(1)}` does not exist")
    return problems


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lowercase, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCE.sub("", text)):
        slug = _slug(match.group(1))
        result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return result


def link_problems(doc: Doc) -> list[str]:
    problems = []
    for match in LINK.finditer(doc.prose):
        target = match.group(1)
        if re.match(r"[a-z][\w+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.folder / file).resolve() if file else None
        if path is not None and not path.exists():
            problems.append(f"{doc.name}: link to {target}: {file} does not exist")
            continue
        if anchor and (path is None or path.suffix == ".md"):
            text = path.read_text(encoding="utf-8") if path is not None else doc.text
            if anchor not in anchors(text):
                problems.append(f"{doc.name}: link to {target}: no heading #{anchor} there")
    return problems


# -- commands --------------------------------------------------------------------------------


@cache
def repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _lookup(params: dict[str, Any], key: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def with_settings(params: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    """`params` with `-S key=value` settings applied, values parsed as YAML (as DVC does); a
    placeholder value (`$s`, `<seed>`) keeps the default, so the key must exist."""
    params = copy.deepcopy(params)
    for setting in settings:
        key, _, value = setting.partition("=")
        *sections, name = key.split(".")
        node = params
        for section in sections:
            node = node.setdefault(section, {})
        if PLACEHOLDER.match(value):
            _lookup(params, key)
            continue
        node[name] = yaml.safe_load(value)
    return params


def _words(command: str) -> list[str]:
    """A shell line's words, a `;`, `&&` or `|` as a word of its own, `# comments` dropped."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def exp_run_settings(doc: Doc) -> list[tuple[str, list[str]]]:
    """(command, its `-S` settings) of every `dvc exp run` in `doc`'s code."""
    found = []
    for code in doc.code:
        for match in DVC_EXP_RUN.finditer(code):
            words, settings = _words(code[match.end():]), []
            for i, word in enumerate(words):
                if word in {";", "&&", "||", "|", "&"}:
                    break
                if word in {"-S", "--set-param"} and i + 1 < len(words):
                    settings.append(words[i + 1])
            found.append((code[match.start():].split("#")[0].strip(), settings))
    return found


def exp_run_problems(doc: Doc) -> list[str]:
    problems = []
    for command, settings in exp_run_settings(doc):
        try:
            parse_params(with_settings(repo_params(), settings))
        except (ValueError, KeyError) as err:
            problems.append(f"{doc.name}: `{command}`: {err}")
    return problems


@cache
def make_targets() -> frozenset[str]:
    makefile = (REPO / "Makefile").read_text()
    targets = set()
    for line in makefile.splitlines():
        match = re.match(r"^([^\s:#=][^:=]*?)\s*:(?!=)", line)
        if match and not line.startswith("\t"):
            targets.update(match.group(1).split())
    return frozenset(t for t in targets if not t.startswith((".", "$")))


def make_problems(doc: Doc, targets: frozenset[str] | None = None) -> list[str]:
    targets = make_targets() if targets is None else targets
    return [f"{doc.name}: `make {m.group(2)}`: no such target in the Makefile"
            for code in doc.code for m in MAKE.finditer(code) if m.group(2) not in targets]


@cache
def imcap_subcommands() -> dict[str, frozenset[str]]:
    """Each `imcap` subcommand with its option strings."""
    from imcap.cli import build_parser

    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: frozenset(o for action in sub._actions for o in action.option_strings)
            for group in actions for name, sub in group.choices.items()}


def imcap_problems(doc: Doc) -> list[str]:
    commands = imcap_subcommands()
    problems = []
    for code in doc.code:
        for match in IMCAP.finditer(code):
            name = match.group(1)
            if name not in commands:
                problems.append(f"{doc.name}: `imcap {name}`: no such subcommand "
                                f"(imcap has {', '.join(sorted(commands))})")
                continue
            for option in OPTION.findall(match.group(2)):
                if option not in commands[name]:
                    problems.append(f"{doc.name}: `imcap {name} {option}`: no such option")
    return problems


# -- defaults, history, the landing page ------------------------------------------------------


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def default_rows(doc: Doc) -> list[tuple[str, str]]:
    """(param cell, default cell) of every table with `param` and `default` columns."""
    rows = []
    lines = doc.prose.splitlines()
    for i, line in enumerate(lines[:-1]):
        if not line.lstrip().startswith("|") or not re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            continue
        header = [cell.lower() for cell in _cells(line)]
        if "param" not in header or "default" not in header:
            continue
        key_at, default_at = header.index("param"), header.index("default")
        for row in lines[i + 2:]:
            if not row.lstrip().startswith("|"):
                break
            cells = _cells(row)
            rows.append((cells[key_at], cells[default_at]))
    return rows


def default_problems(doc: Doc) -> list[str]:
    problems = []
    for key_cell, default_cell in default_rows(doc):
        key, default = (re.fullmatch(r"`([^`]+)`", cell) for cell in (key_cell, default_cell))
        if not key or not default:
            problems.append(f"{doc.name}: a defaults table row must be `key` | `value`, got "
                            f"{key_cell} | {default_cell}")
            continue
        try:
            actual = _lookup(repo_params(), key.group(1))
        except KeyError:
            problems.append(f"{doc.name}: `{key.group(1)}` is not in params.yaml")
            continue
        quoted = yaml.safe_load(default.group(1))
        if quoted != actual or type(quoted) is not type(actual):
            problems.append(f"{doc.name}: `{key.group(1)}` defaults to {actual!r} in params.yaml, "
                            f"the docs say {quoted!r}")
    return problems


def history_problems(doc: Doc) -> list[str]:
    return [f"{doc.name}:{doc.text.count(chr(10), 0, m.start()) + 1}: history or process "
            f"({m.group(0)!r}): describe the product as it is"
            for m in HISTORY.finditer(doc.text)]


CHECKS = {
    "paths": path_problems,
    "links": link_problems,
    "dvc exp run": exp_run_problems,
    "make": make_problems,
    "imcap": imcap_problems,
    "defaults": default_problems,
    "history": history_problems,
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(REPO)))
def test_docs_match_the_repository(path: Path, check: str):
    problems = CHECKS[check](Doc.read(path))
    assert not problems, "\n".join(problems)


def test_the_docs_are_checked_at_all():
    """The checks find what they look for, so a broken parser cannot pass by finding nothing."""
    all_docs = docs()
    assert {"README.md", "docs/architecture.md", "docs/training.md"} <= {d.name for d in all_docs}
    readme = all_docs[0]
    seed_rows = [c for c, _ in exp_run_settings(readme) if " -n v" in c]
    assert len(seed_rows) == 8
    assert sum(len(default_rows(d)) for d in all_docs) >= 40
    assert sum(1 for d in all_docs for c in d.code for _ in MAKE.finditer(c)) >= 5
    assert sum(1 for d in all_docs for c in d.code for _ in IMCAP.finditer(c)) >= 5
    assert sum(1 for d in all_docs for c in d.code for _ in PATH.finditer(c)) >= 100
    assert {"caption", "demo", "compare"} <= set(imcap_subcommands())
    assert {"repro", "test", "show", "seeds"} <= make_targets()


def test_readme_is_a_landing_page_linking_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, \
        f"README.md has {len(readme.splitlines())} lines; move details into docs/"
    linked = {match.group(1).split("#")[0] for match in LINK.finditer(readme)}
    missing = [f"docs/{page.name}" for page in DOCS[1:] if f"docs/{page.name}" not in linked]
    assert not missing, f"README.md links no {', '.join(missing)}"


PLANTED = {
    "paths": "See `imcap/training/nonexistent.py` and `tests/test_seed_rows.py`.",
    "links": "See [the guide](docs/nowhere.md) and [training](docs/training.md#no-such-part).",
    "dvc exp run": "```bash\ndvc exp run -S attention=III -S train.epochs=ten\n```",
    "make": "Run `make everything`.",
    "imcap": "Run `imcap translate photo.jpg` or `imcap caption photo.jpg --beams 3`.",
    "defaults": "| param | default |\n|---|---|\n| `train.epochs` | `21` |",
    "history": "The loop was measured before issue 10, in the session that wrote this.",
}


@pytest.mark.parametrize("check", list(CHECKS))
def test_each_check_catches_a_planted_error(check: str):
    planted = Doc("planted.md", PLANTED[check], REPO)
    assert CHECKS[check](planted), f"the {check} check missed: {PLANTED[check]}"
    # and the same check passes a document without the error
    assert not CHECKS[check](Doc("clean.md", "Run `make test`; see `dvc.yaml`.", REPO))


def test_placeholders_and_brace_paths():
    doc = Doc("x.md", "`dvc exp run -S train.seed=$s -S train.epochs=<n>` and "
                      "`imcap/evaluation/{bootstrap,per_image,compare}.py` and "
                      "`tests/test_docs.py::test_placeholders_and_brace_paths`", REPO)
    assert not exp_run_problems(doc) and not path_problems(doc)
    assert exp_run_problems(Doc("x.md", "`dvc exp run -S train.no_such_key=$s`", REPO))
    assert path_problems(Doc("x.md", "`imcap/evaluation/{bootstrap,nothing}.py`", REPO))
    assert path_problems(Doc("x.md", "`tests/test_docs.py::test_no_such_test`", REPO))


def code_map_gaps(architecture: Doc, repo: Path) -> list[str]:
    """Modules of `imcap/` and `stages/` that the code map in docs/architecture.md does not name,
    by their path or a folder above it."""
    cited = {match.group(1).rstrip("/")
             for code in architecture.code for match in PATH.finditer(code)}
    gaps = []
    for module in sorted([*repo.glob("imcap/**/*.py"), *repo.glob("stages/*.py")]):
        relative = module.relative_to(repo)
        if module.name == "__init__.py" or "tests" in relative.parts:
            continue
        # a folder named counts for its modules unless the map lists its modules one by one
        # (`imcap/demo/` does not, `imcap/training/` does), and the top-level ones never
        folders = {str(parent) for parent in relative.parents if len(parent.parts) > 1
                   and not any(Path(path).parent == parent for path in cited)}
        if not {str(relative), *folders} & cited:
            gaps.append(f"docs/architecture.md: the code map names no {relative}")
    return gaps


def test_the_code_map_names_every_module():
    gaps = code_map_gaps(Doc.read(REPO / "docs/architecture.md"), REPO)
    assert not gaps, "\n".join(gaps)
    assert code_map_gaps(Doc("planted.md", "`imcap/`, `imcap/training/`, "
                                           "`imcap/training/loop.py`", REPO), REPO)
