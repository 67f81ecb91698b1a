"""Every citation resolves (docs/CONTRIBUTING.md, "Documentation"): a relative link in the README,
docs/, bench/README.md or an example's README points at a file that exists and, with `#anchor`,
at a heading of that file (GitHub's anchors); a code comment or docstring in cookieguard/, tests/
or bench/ that cites a page and a quoted heading (the README or a page of docs/, as in
`docs/operations.md "Logs"`) or a contract section (`docs/behaviour.md §3`) names a heading that
exists; and nothing cites a document that is not in the repository. The checker's own tests
plant a bad citation of each kind and see it caught."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

from cookieguard.loader import parse_config
from tests.support.proxy_process import ROOT

MARKDOWN = sorted(
    [
        ROOT / "README.md",
        ROOT / "bench/README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "examples").glob("*/README.md"),
    ]
)
CODE = sorted(path for folder in ("cookieguard", "tests", "bench") for path in (ROOT / folder).rglob("*.py"))
# Written by `make e2e`, never committed: the examples' READMEs link the latest run's output.
GENERATED = ("test-output/",)
# The product contract outside the repository; its name must not appear in code (built here in
# two halves so this file does not cite it itself).
OUTSIDE_DOCUMENT = "SP" + "EC"


# -- headings and GitHub's anchors ------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The `id` GitHub gives a heading: inline markup dropped, lower case, every character that
    is not a letter, mark, digit, connector (`_`), space or `-` removed, spaces become `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.strip().lower()
    kept = "".join(
        c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc"
    )
    return kept.replace(" ", "-")


def _outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks and HTML comments."""
    lines, fence, comment = [], False, False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if "<!--" in line:
            comment = "-->" not in line.split("<!--", 1)[1]
            continue
        if comment:
            comment = "-->" not in line
            continue
        if not fence:
            lines.append((number, line))
    return lines


def headings(text: str) -> list[str]:
    """A markdown file's ATX headings, as written (without the `#`s)."""
    return [m.group(1).strip() for _, line in _outside_fences(text) if (m := re.match(r"#{1,6} +(.+)", line))]


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes: a repeated heading gets `-1`, `-2`, ..."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        slug = github_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


# -- links in markdown ------------------------------------------------------------------------

LINK = re.compile(r"\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every markdown link outside code blocks and code spans."""
    found = []
    for number, line in _outside_fences(text):
        spans = [m.span() for m in re.finditer(r"`[^`]*`", line)]
        for m in LINK.finditer(line):
            if not any(start < m.start(1) < end for start, end in spans):
                found.append((number, m.group(1)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    text = path.read_text()
    for number, target in links(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{path.relative_to(root)}:{number}: {target}"
        destination = (path.parent / file_part).resolve() if file_part else path
        relative = (
            destination.relative_to(root.resolve()).as_posix()
            if destination.is_relative_to(root.resolve())
            else None
        )
        if relative is not None and relative.startswith(GENERATED):
            continue
        if not destination.exists():
            problems.append(f"{where}: no such file")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination.read_text()):
            problems.append(f"{where}: no heading with that anchor")
    return problems


# -- citations in code ------------------------------------------------------------------------

DOCUMENT = r"(README(?:\.md)?|bench/README\.md|docs/[\w./-]+\.md)"
CITATION = re.compile(DOCUMENT + r",?\s+((?:(?:\"[^\"]+\"|§\d+)(?:,\s*|\s+and\s+)?)+)")


def citations(source: str) -> list[tuple[str, str]]:
    """(document, heading or `§N`) for each citation in a source file. A comment or docstring
    may wrap a citation over lines: line breaks, indentation and `#` are read as one space."""
    flat = re.sub(r"\s*\n\s*(?:#+\s*)?", " ", source)
    found = []
    for m in CITATION.finditer(flat):
        document = "README.md" if m.group(1) == "README" else m.group(1)
        for cited in re.findall(r"\"([^\"]+)\"|(§\d+)", m.group(2)):
            found.append((document, cited[0] or cited[1]))
    return found


def _plain(heading: str) -> str:
    return " ".join(heading.replace("`", "").split()).lower()


def cites_a_heading(cited: str, document_text: str) -> bool:
    """A quoted heading names a heading exactly, or its words before a parenthesis ("Any OIDC
    provider" for "Any OIDC provider (`config/oidc.yaml`)"); `§N` a heading that starts with it."""
    written = [_plain(h) for h in headings(document_text)]
    if cited.startswith("§"):
        return any(h.startswith(cited + " ") for h in written)
    want = _plain(cited)
    return any(h == want or h.startswith(want + " (") for h in written)


def broken_citations(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    source = path.read_text()
    for document, cited in citations(source):
        where = f"{path.relative_to(root)}: {document} {cited!r}"
        target = root / document
        if not target.is_file():
            problems.append(f"{where}: no such document")
        elif not cites_a_heading(cited, target.read_text()):
            problems.append(f"{where}: no such heading")
    for number, line in enumerate(source.splitlines(), 1):
        if re.search(rf"\b{OUTSIDE_DOCUMENT}\b", line):
            problems.append(
                f"{path.relative_to(root)}:{number}: cites {OUTSIDE_DOCUMENT}, which is not in the repository"
            )
    return problems


# -- the checker, on planted mistakes ---------------------------------------------------------


def test_github_anchors() -> None:
    assert github_anchor("`cookieguard demo --provider supabase`") == "cookieguard-demo---provider-supabase"
    assert github_anchor("§3 Refresh outcomes") == "3-refresh-outcomes"
    assert github_anchor("Next.js + Amplify example") == "nextjs--amplify-example"
    assert github_anchor("Amazon Cognito with Amplify v6 (`config/cognito.yaml`)") == (
        "amazon-cognito-with-amplify-v6-configcognitoyaml"
    )
    assert github_anchor("Profile findings (py-spy, 500 Hz, `make bench BENCH_ARGS=--profile`)") == (
        "profile-findings-py-spy-500-hz-make-bench-bench_args--profile"
    )
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1", "a-2"}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_link_to_a_missing_file_or_heading_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "docs/ops.md": "# Operations\n\n## The session endpoint\n",
            "README.md": (
                "# x\n\n[ok](docs/ops.md#the-session-endpoint) [ok too](#x) [web](https://example.com/#nope)\n"
                "[gone](docs/gone.md) [bad anchor](docs/ops.md#session-endpoint) [here](#nowhere)\n"
                "`[in code](docs/gone.md)`\n```\n[in a block](docs/gone.md)\n```\n"
                "[generated](test-output/e2e/run.txt)\n"
            ),
        },
    )
    assert broken_links(root / "README.md", root) == [
        "README.md:4: docs/gone.md: no such file",
        "README.md:4: docs/ops.md#session-endpoint: no heading with that anchor",
        "README.md:4: #nowhere: no heading with that anchor",
    ]


def test_a_comment_citing_a_missing_heading_is_caught(tmp_path: Path) -> None:
    readme, behaviour, gone = "README", "docs/behaviour.md", "docs/gone.md"
    root = _tree(
        tmp_path,
        {
            "README.md": "# cookieguard\n\n## Quickstart\n",
            "docs/behaviour.md": "# Contract\n\n## §1 The request\n\n## §3 Refresh outcomes\n",
            "docs/providers/oidc.md": "# Any OIDC provider (`config/oidc.yaml`)\n",
            "pkg/good.py": (
                f'"""Fine ({readme} "Quickstart"; {behaviour} §1, §3; docs/providers/oidc.md\n'
                f'"Any OIDC\n provider")."""\n# wrapped: ({readme},\n# "Quickstart")\n'
            ),
            "pkg/bad.py": (
                f'# ({readme}, "Cookie layouts") and ({readme} "Quickstart", "Start-up")\n'
                f'# {behaviour} §2 and {gone} "Anything"\n'
            ),
        },
    )
    assert broken_citations(root / "pkg/good.py", root) == []
    assert broken_citations(root / "pkg/bad.py", root) == [
        "pkg/bad.py: README.md 'Cookie layouts': no such heading",
        "pkg/bad.py: README.md 'Start-up': no such heading",
        "pkg/bad.py: docs/behaviour.md '§2': no such heading",
        "pkg/bad.py: docs/gone.md 'Anything': no such document",
    ]


def test_citing_the_outside_contract_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"pkg/mod.py": f"# as {OUTSIDE_DOCUMENT} section 4 says\nx = 1\n"})
    assert broken_citations(root / "pkg/mod.py", root) == [
        f"pkg/mod.py:1: cites {OUTSIDE_DOCUMENT}, which is not in the repository"
    ]


# -- the repository ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_every_code_citation_names_a_heading() -> None:
    assert [problem for path in CODE for problem in broken_citations(path)] == []


def test_the_pages_exist() -> None:
    """The README links the reference pages; they and the contract are in the repository."""
    for page in ("behaviour", "configuration", "operations", "proxy", "scale-out", "security",
                 "architecture", "performance", "demo", "CONTRIBUTING"):  # fmt: skip
        assert (ROOT / f"docs/{page}.md").is_file(), page
    readme_links = {target for _, target in links((ROOT / "README.md").read_text())}
    assert {"docs/behaviour.md", "docs/configuration.md", "docs/operations.md"} <= readme_links


def test_the_readmes_minimal_configs_load() -> None:
    """Each YAML block of the README is a configuration `cookieguard check` accepts."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert len(blocks) >= 3
    env = {"OIDC_CLIENT_SECRET": "s", "SUPABASE_ANON_KEY": "k", "AUTH_SECRET": "a"}
    kinds, layouts = set(), set()
    for block in blocks:
        config = parse_config(block, env=env)
        kinds.add(yaml.safe_load(block)["provider"]["kind"])
        layouts.add(config.cookies.layout)
        assert config.provider is not None
    assert kinds == {"cognito", "oidc", "supabase"}
    assert layouts == {"amplify", "named", "supabase", "authjs"}
