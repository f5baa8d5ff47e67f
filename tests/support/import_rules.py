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
LIVE_CORE = "monitor.live"  # the live-view core the views share (state rules, feed)
LIVE_CORE_MAY_IMPORT = ("monitor.events", "monitor.backoff", "deploy")
VIEW_MAY_IMPORT = ("monitor.events", "monitor.publish.settings", "monitor.backoff", "deploy")
HEAVY = ("torch",)  # never reached from a view, however indirectly
# What `pip install weldmon` (no extras) runs: the monitor and deploy's ONNX path. Importing
# them must not load a package only the extras bring; lazy imports inside functions are
# allowed there (TorchScript artifacts load torch when asked to), so this rule follows
# module-level imports only.
BASE_INSTALL = (
    "monitor",
    "weldmon",
    "deploy.audio",
    "deploy.cli",
    "deploy.contract",
    "deploy.dataset_layout",
    "deploy.digest",
    "deploy.errors",
    "deploy.loader",
    "deploy.model",
    "deploy.onnx_model",
    "deploy.pooling",
    "deploy.predict",
    "deploy.scan",
    "deploy.segment",
    "deploy.windows",
)
EXTRAS_ONLY = ("torch", "onnx", "onnxscript", "matplotlib")  # what the base install lacks
# Rooms that install with their own extra: `weldmon[console]` brings the console's web stack
# and matplotlib. Base modules that import them at module level are still reported.
OWN_EXTRA = ("monitor.console",)

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


def _runs_at_import(tree: ast.Module) -> Iterable[ast.AST]:
    """The nodes executed when the module is imported: not function bodies, not
    ``if TYPE_CHECKING:`` blocks."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def import_graph(
    root: Path, packages: Iterable[str] = FIRST_PARTY, *, lazy: bool = True
) -> dict[str, set[str]]:
    """Every module under ``root/<package>`` -> the dotted names it imports (with `lazy`
    false, only the imports that run when the module is imported)."""
    files = [p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))]
    modules = {_module_name(root, p): p for p in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        imported: set[str] = set()
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree) if lazy else _runs_at_import(tree):
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
    f"monitor.{m}"
    for m in ("cli", "daemon", "replay", "reload", "runtime", "config", "segment_cli")
)  # the top-level modules that wire the rooms together; no room imports them

RULES: tuple[Forbid | AllowOnly, ...] = (
    Forbid("deploy", ("training", "monitor")),
    Forbid("monitor", ("training",)),
    Forbid("monitor.pipeline", ("monitor.publish",)),
    *(AllowOnly(view, (LIVE_CORE, *VIEW_MAY_IMPORT, "weldmon")) for view in VIEWS),
    # The live-view core: the schema and the back-off helper, nothing of a view or the daemon.
    AllowOnly(LIVE_CORE, LIVE_CORE_MAY_IMPORT),
    # Each room imports only the rooms below it on the data path (and deploy, weldmon).
    AllowOnly("monitor.events", ("deploy",)),
    AllowOnly("monitor.backoff", ()),
    AllowOnly("monitor.audio", ("deploy", "monitor.events", "monitor.backoff")),
    AllowOnly("monitor.segment", ("deploy", "monitor.events")),
    AllowOnly(
        "monitor.pipeline",
        ("deploy", "monitor.events", "monitor.audio", "monitor.segment", "monitor.backoff"),
    ),
    AllowOnly("monitor.publish", ("deploy", "monitor.events", "monitor.backoff", "weldmon")),
    AllowOnly(
        "monitor.ops",
        ("deploy", "monitor.events", "monitor.audio", "monitor.publish", "weldmon"),
    ),
    # teach-in: judges through the pipeline's trackers, stores through the atomic rewrite
    AllowOnly(
        "monitor.teach",
        ("deploy", "monitor.events", "monitor.pipeline", "monitor.config_edit", "weldmon"),
    ),
)
# Never reached, however indirectly, from the views and from what they and training share.
TORCH_FREE = (*VIEWS, LIVE_CORE, "monitor.events", "monitor.publish.settings", "monitor.backoff",
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


def base_install_violations(import_time_graph: Graph) -> list[str]:
    """Modules of the base install that load an extras-only package when imported (give
    ``import_graph(root, lazy=False)``)."""
    return [
        f"{module} -> {name}: the base install has no {name.split('.')[0]}"
        for module in sorted(import_time_graph)
        if any(within(module, base) for base in BASE_INSTALL)
        and not any(within(module, room) for room in OWN_EXTRA)
        for name in sorted(reachable(import_time_graph, module))
        if name.split(".")[0] in EXTRAS_ONLY
    ]
