"""The package's layers: every prefgen module's imports (deferred ones inside functions included),
read with `ast`, go only down the layers and never round a circle of subpackages."""

import ast
from pathlib import Path

from support.paths import REPO

PACKAGE = REPO / "prefgen"

# Bottom first. A module may import its own part and the parts of lower layers, nothing else.
LAYERS = (
    ("schema", "prompts"),  # rows' columns and reject reasons; prompt texts
    ("storage",),  # the storage object and the files written whole on it
    ("models",),  # model declarations, engine and sampling settings
    ("role_configs",),  # each role's config: roles/config.py (what every role has) and roles/<kind>/config.py
    ("config",),  # the whole config, which gathers the roles' configs
    ("input",),
    ("engines",),
    ("roles",),
    ("report",),
    ("output",),
    ("dataset",),
    ("run",),
    ("rounds",),  # on-policy rounds: runs as child processes, DPO training on their output
    ("cli",),
)
# Modules whose part is not their folder: the storage object sits below the rest of output/, and
# each role's config (`prefgen.roles.config`, `prefgen.roles.<kind>.config`) below the whole config.
STORAGE = ("prefgen.output.storage", "prefgen.output.local_store", "prefgen.output.object_store",
           "prefgen.output.files")


def is_role_config(module: str) -> bool:
    names = module.split(".")
    return names[:2] == ["prefgen", "roles"] and names[-1] == "config" and len(names) in (3, 4)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str | None:
    """The part (subpackage, or module at the package's top) a prefgen module belongs to."""
    if module in STORAGE or module.startswith(tuple(m + "." for m in STORAGE)):
        return "storage"
    if is_role_config(module):
        return "role_configs"
    names = module.split(".")
    return names[1] if len(names) > 1 and names[0] == "prefgen" else None


def imported(module: str, is_package: bool, tree: ast.AST):
    """(line, imported module) for every prefgen import in `tree`, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            for alias in node.names:  # `from prefgen.report import plots`: the module is prefgen.report.plots
                full = f"{name}.{alias.name}"
                yield node.lineno, full if is_module(full) else name


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def import_edges(package: Path = PACKAGE) -> list[tuple[str, str, str, str]]:
    """(importing part, imported part, where, what) for every import between two parts."""
    edges = []
    for path in sorted(package.rglob("*.py")):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported(module, path.name == "__init__.py", tree):
            src, dst = part_of(module), part_of(target)
            if dst is not None and src != dst:
                edges.append((src, dst, f"{path.relative_to(REPO)}:{line}", target))
    return edges


def layer_of(part: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if part in layer]
    assert found, f"prefgen part {part!r} has no layer: add it to LAYERS in {Path(__file__).name}"
    return found[0]


def upward_imports(edges) -> list[str]:
    return [f"{where}: {src} imports {what} ({dst}, not below it)" for src, dst, where, what in edges
            if layer_of(dst) >= layer_of(src)]


def circles(edges) -> list[str]:
    """Each circle of parts found, named by the imports that close it."""
    graph: dict[str, dict[str, str]] = {}
    for src, dst, where, what in edges:
        graph.setdefault(src, {}).setdefault(dst, f"{where} imports {what}")
    found, done = [], set()

    def visit(part, path):
        if part in path:
            loop = path[path.index(part):] + [part]
            found.append(" -> ".join(loop) + ": " + "; ".join(graph[a][b] for a, b in zip(loop, loop[1:])))
            return
        if part in done:
            return
        for nxt in graph.get(part, {}):
            visit(nxt, path + [part])
        done.add(part)

    for part in sorted(graph):
        visit(part, [])
    return found


def test_every_import_goes_down_the_layers():
    edges = import_edges()
    assert {"config", "roles", "output", "run"} <= {e[0] for e in edges}  # the package was read
    assert upward_imports(edges) == []


def test_no_circle_between_parts():
    assert circles(import_edges()) == []


def test_the_checks_name_an_upward_import_and_a_circle():
    """The checks see deferred imports inside functions, and name the offending file and line."""
    edges = [("config", "roles", "prefgen/config/checks.py:13", "prefgen.roles.judge.reward"),
             ("roles", "config", "prefgen/roles/judge/reward.py:27", "prefgen.config")]
    assert upward_imports(edges) == ["prefgen/config/checks.py:13: config imports prefgen.roles.judge.reward (roles, "
                                     "not below it)"]
    assert circles(edges)[0].startswith("config -> roles -> config: prefgen/config/checks.py:13 imports")
    tree = ast.parse("def f():\n    from prefgen.roles.judge.reward import JURY_SCALE\n")
    assert list(imported("prefgen.config.checks", False, tree)) == [(2, "prefgen.roles.judge.reward")]
    tree = ast.parse("from ..roles import pair\n")
    assert list(imported("prefgen.config.checks", False, tree)) == [(1, "prefgen.roles.pair")]


def test_a_role_config_loads_nothing_above_it():
    """Loading `prefgen.roles.<kind>.config` runs `prefgen/roles/__init__.py` and the kind's `__init__.py`
    first: they import nothing, or the whole config would load the roles' tasks (and so itself)."""
    inits = [p for p in (PACKAGE / "roles").rglob("__init__.py")]
    assert len(inits) >= 5
    for path in inits:
        tree = ast.parse(path.read_text())
        assert list(imported(module_name(path), True, tree)) == [], path
    configs = sorted(module_name(p) for p in (PACKAGE / "roles").rglob("config.py"))
    assert configs and all(part_of(m) == "role_configs" for m in configs), configs
    assert part_of("prefgen.roles.judge.task") == part_of("prefgen.roles.judge") == "roles"


def test_a_role_config_importing_the_whole_config_is_named():
    """A role's config that reached up to the config gathering it (a circle at load) is an upward import."""
    edges = [("role_configs", "config", "prefgen/roles/judge/config.py:12", "prefgen.config")]
    assert upward_imports(edges) == ["prefgen/roles/judge/config.py:12: role_configs imports prefgen.config "
                                     "(config, not below it)"]
