"""The package layout's import rules hold on the source tree, and the checker catches a break."""

from __future__ import annotations

from pathlib import Path

from tests.support.import_rules import base_install_violations, import_graph, violations

REPO = Path(__file__).resolve().parents[1]


def test_the_source_tree_keeps_every_import_rule() -> None:
    graph = import_graph(REPO)
    assert "monitor.pipeline.core" in graph and "deploy.segment.gate" in graph  # it looked
    assert violations(graph) == []


def test_the_base_install_loads_no_extras_only_package_at_import() -> None:
    graph = import_graph(REPO, lazy=False)
    assert "deploy.loader" in graph and "monitor.daemon" in graph  # it looked
    assert base_install_violations(graph) == []


def test_a_module_level_torch_import_in_the_base_install_is_reported(tmp_path: Path) -> None:
    _write(tmp_path, "deploy.loader", "def f():\n    from deploy import heavy\n")
    _write(tmp_path, "deploy.heavy", "import torch\n")
    _write(
        tmp_path,
        "deploy.model",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n",
    )
    _write(tmp_path, "monitor.pipeline.tracker", "from deploy import pooling\n")
    _write(tmp_path, "deploy.pooling", "try:\n    import onnx\nexcept ImportError:\n    pass\n")
    found = base_install_violations(import_graph(tmp_path, lazy=False))
    assert found == [
        "deploy.pooling -> onnx: the base install has no onnx",
        "monitor.pipeline.tracker -> onnx: the base install has no onnx",
    ]


def _write(root: Path, module: str, source: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        init = root / parent / "__init__.py"
        if parent != Path() and not init.exists():
            init.write_text("")
    path.write_text(source)


def test_a_synthetic_tree_breaking_each_rule_is_reported_rule_by_rule(tmp_path: Path) -> None:
    _write(tmp_path, "deploy.heavy", "import torch\n")
    _write(tmp_path, "deploy.errors", "")
    _write(tmp_path, "deploy.leak", "from monitor.events import Source\n")
    _write(tmp_path, "training.train", "from deploy.errors import WeldmonError\n")
    _write(tmp_path, "monitor.events", "from deploy.errors import WeldmonError\n")
    _write(tmp_path, "monitor.backoff", "")
    _write(tmp_path, "monitor.replay", "def f():\n    from training import train\n")
    _write(tmp_path, "monitor.publish.publisher", "")
    _write(tmp_path, "monitor.publish.settings", "")
    _write(
        tmp_path,
        "monitor.pipeline.core",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from monitor.publish.publisher import MqttPublisher\n",
    )
    _write(tmp_path, "monitor.watch.app", "from monitor.events import Source\nfrom . import view\n")
    _write(tmp_path, "monitor.watch.view", "from ..pipeline import core\n")
    _write(tmp_path, "monitor.console.server", "from deploy import heavy\n")
    _write(tmp_path, "monitor.audio.capture", "from monitor.config import AudioConfig\n")
    found = violations(import_graph(tmp_path))
    assert found == [
        "deploy.leak -> monitor.events: deploy never imports training, monitor",
        "monitor.replay -> training: monitor never imports training",
        "monitor.replay -> training.train: monitor never imports training",
        "monitor.pipeline.core -> monitor.publish.publisher: "
        "monitor.pipeline never imports monitor.publish",
        "monitor.watch.view -> monitor.pipeline: monitor.watch imports only monitor.live, "
        "monitor.events, monitor.publish.settings, monitor.backoff, deploy, weldmon and its "
        "own room",
        "monitor.watch.view -> monitor.pipeline.core: monitor.watch imports only "
        "monitor.live, monitor.events, monitor.publish.settings, monitor.backoff, deploy, "
        "weldmon and its own room",
        "monitor.audio.capture -> monitor.config: monitor.audio imports only deploy, "
        "monitor.events, monitor.backoff and its own room",
        "monitor.pipeline.core -> monitor.publish.publisher: monitor.pipeline imports only "
        "deploy, monitor.events, monitor.audio, monitor.segment, monitor.backoff and its own "
        "room",
        "monitor.console.server -> torch: never loads torch, not even indirectly",
    ]


def test_a_view_importing_a_deploy_module_that_loads_torch_is_reported() -> None:
    graph = {
        "monitor.watch.app": {"deploy.errors", "monitor.events"},
        "monitor.events": {"deploy.segment.modes"},
        "deploy.segment.modes": {"deploy.loader"},
        "deploy.loader": {"torch", "numpy"},
    }
    assert violations(graph) == [
        "deploy.segment.modes -> torch: never loads torch, not even indirectly",
        "monitor.events -> torch: never loads torch, not even indirectly",
        "monitor.watch.app -> torch: never loads torch, not even indirectly",
    ]
    graph["deploy.loader"] = {"numpy"}
    assert violations(graph) == []


def test_the_live_view_core_is_shared_by_both_views_and_imports_neither() -> None:
    graph = import_graph(REPO)
    assert {"monitor.live.state", "monitor.live.feed"} <= graph["monitor.console.ingest"]
    assert "monitor.live.state" in graph["monitor.watch.state"]
    broken = {
        "monitor.live.state": {"monitor.events", "monitor.console.fleet"},
        "monitor.live.feed": {"monitor.backoff", "monitor.publish.settings"},
        "monitor.live.topics": {"monitor.events", "torch"},
    }
    assert violations(broken) == [
        "monitor.live.feed -> monitor.publish.settings: monitor.live imports only "
        "monitor.events, monitor.backoff, deploy and its own room",
        "monitor.live.state -> monitor.console.fleet: monitor.live imports only "
        "monitor.events, monitor.backoff, deploy and its own room",
        "monitor.live.topics -> torch: never loads torch, not even indirectly",
    ]
