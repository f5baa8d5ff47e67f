"""The import rules of the package layout, and a checker that reads them off the source.

The graph comes from the AST of every module (imports inside functions and under
``TYPE_CHECKING`` count too: a lazy import is still a dependency). Hand-written rather than
import-linter because two rules are allow-lists (the views may import *only* a few modules,
so a new room is forbidden to them without anyone listing it) and one rule follows imports
through deploy into third-party packages (no torch for the views); both are a few lines here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

FIRST_PARTY = ("deploy", "training", "monitor", "weldmon")
VIEWS = ("monitor.watch", "monitor.console")  # separate processes, MQTT clients only
VIEW_MAY_IMPORT = ("monitor.events", "monitor.publish.settings", "monitor.backoff", "deploy")
HEAVY = ("torch",)

Graph = Mapping[str, set[str]]  # module -> the modules it imports (first- and third-party)


def within(name: str, prefix: str) -> bool:
    """Whether dotted ``name`` is ``prefix`` or inside it (``monitor.watch`` is not inside
    ``monitor.watch_state``)."""
    return name == prefix or name.startswith(prefix + ".")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path, packages: Iterable[str] = FIRST_PARTY) -> dict[str, set[str]]:
    """Every module under ``root/<package>`` -> the dotted names it imports."""
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    modules = {_module_name(root, p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                imported.add(base)
                # `from monitor.ops import clips` imports the module monitor.ops.clips
                imported.update(
                    f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules
                )
        graph[name] = imported
    return graph


@dataclass(frozen=True)
class Forbid:
    """Modules inside ``source`` must not import anything inside ``targets``."""

    source: str
    targets: tuple[str, ...]

    def broken_by(self, module: str, imported: str) -> bool:
        return within(module, self.source) and any(within(imported, t) for t in self.targets)

    def describe(self) -> str:
        return f"{self.source} never imports {', '.join(self.targets)}"


@dataclass(frozen=True)
class AllowOnly:
    """First-party imports of modules inside ``source`` stay inside ``source`` or ``allowed``."""

    source: str
    allowed: tuple[str, ...]

    def broken_by(self, module: str, imported: str) -> bool:
        if not within(module, self.source) or imported.split(".")[0] not in FIRST_PARTY:
            return False
        return not any(within(imported, a) for a in (self.source, *self.allowed))

    def describe(self) -> str:
        return f"{self.source} imports only {', '.join(self.allowed)} and its own room"


WIRING = tuple(
    f"monitor.{m}" for m in ("cli", "daemon", "replay", "reload", "runtime", "config")
)  # the top-level modules that wire the rooms together; no room imports them

RULES: tuple[Forbid | AllowOnly, ...] = (
    Forbid("deploy", ("training", "monitor")),
    Forbid("monitor", ("training",)),
    Forbid("monitor.pipeline", ("monitor.publish",)),
    *(AllowOnly(view, (*VIEW_MAY_IMPORT, "weldmon")) for view in VIEWS),
    # Each room imports only the rooms below it on the data path (and deploy, weldmon).
    AllowOnly("monitor.events", ("deploy",)),
    AllowOnly("monitor.backoff", ()),
    AllowOnly("monitor.audio", ("deploy", "monitor.events", "monitor.backoff")),
    AllowOnly("monitor.segment", ("deploy", "monitor.events")),
    AllowOnly("monitor.pipeline", ("deploy", "monitor.events", "monitor.audio", "monitor.segment")),
    AllowOnly("monitor.publish", ("deploy", "monitor.events", "monitor.backoff", "weldmon")),
    AllowOnly(
        "monitor.ops",
        ("deploy", "monitor.events", "monitor.audio", "monitor.publish", "weldmon"),
    ),
)
# Never reached, however indirectly, from the views and from what they and training share.
TORCH_FREE = (*VIEWS, "monitor.events", "monitor.publish.settings", "monitor.backoff",
              "deploy.segment", "deploy.dataset_layout")  # fmt: skip


def reachable(graph: Graph, start: str) -> set[str]:
    """Every name ``start`` imports, directly or through first-party modules."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for name in graph.get(todo.pop(), set()):
            if name not in seen:
                seen.add(name)
                todo.append(name)
    return seen


def violations(graph: Graph, rules: Iterable[Forbid | AllowOnly] = RULES) -> list[str]:
    """Every broken rule as ``module -> imported: rule``; empty when the layout holds."""
    found = [
        f"{module} -> {imported}: {rule.describe()}"
        for rule in rules
        for module, names in sorted(graph.items())
        for imported in sorted(names)
        if rule.broken_by(module, imported)
    ]
    for module in sorted(graph):
        if any(within(module, light) for light in TORCH_FREE):
            heavy = sorted(n for n in reachable(graph, module) if n.split(".")[0] in HEAVY)
            found.extend(f"{module} -> {n}: never loads {n}, not even indirectly" for n in heavy)
    return found
