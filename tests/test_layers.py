"""The package's folders are layers, and imports only run downwards (docs/architecture.md).

Read from the source with `ast`, so the check needs nothing imported: every `import` and
`from ... import` of a cookieguard module, at module level or inside a function, must name a
module of the same or a lower layer. Imports under `if TYPE_CHECKING:` are annotations only (a
config record names its kind's base record) and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cookieguard"

# Highest first. A module belongs to the first prefix it starts with.
LAYERS: list[tuple[str, list[str]]] = [
    ("command", ["cookieguard.cli", "cookieguard.__main__"]),
    ("operations", ["cookieguard.ops"]),
    ("assembly", ["cookieguard.app", "cookieguard.loader"]),
    ("edge", ["cookieguard.edge"]),
    ("session", ["cookieguard.session"]),
    ("tokens and store", ["cookieguard.tokens", "cookieguard.store"]),
    (
        "base",
        [
            "cookieguard.config",
            "cookieguard.schema",
            "cookieguard.cookies",
            "cookieguard.logs",
            "cookieguard.metrics",
            "cookieguard.lru",
            "cookieguard.vocabulary",
            "cookieguard",
        ],
    ),
]


def layer_of(module: str) -> int:
    for depth, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return depth
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS and docs/architecture.md")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_imports(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    name = module_name(path, package)
    own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package.split(".")[: len(own_package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return [(line, name) for line, name in found if name == "cookieguard" or name.startswith("cookieguard.")]


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))


def test_imports_only_run_downwards() -> None:
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for line, imported in runtime_imports(path):
            if layer_of(imported) < layer_of(importer):
                upward.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line}: {importer} "
                    f"({LAYERS[layer_of(importer)][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
                )
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    package = tmp_path / "cookieguard"
    source = package / "session" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from cookieguard.edge import proxy\n"
        "from ..ops import explain\n"
        "if TYPE_CHECKING:\n"
        "    import cookieguard.app\n"
    )
    imports = runtime_imports(source, package)
    assert imports == [(2, "cookieguard.edge"), (3, "cookieguard.ops")]
    importer = layer_of(module_name(source, package))
    assert all(layer_of(name) < importer for _, name in imports)
