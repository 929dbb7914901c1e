"""lair's layering, read from the import statements themselves (ast), function-level ones too.

Imports run downward only: models <- losses / data <- train / evaluate <- the command lines, with
the shared infrastructure (sharding, workdir, checkpoint, configs, objectives, files, errors)
usable by all. Checked here over whatever modules lair/ holds, not a list of today's files.
"""
import ast
import pathlib

import pytest

LAIR = pathlib.Path(__file__).resolve().parents[1] / "lair"


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(LAIR.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in sorted(LAIR.rglob("*.py"))}


def _imports(name: str, path: pathlib.Path, modules) -> set[str]:
  """The lair modules `name` imports anywhere in its file (`from pkg import mod` -> pkg.mod)."""
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")
        anchor = anchor[:len(anchor) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      for alias in node.names:
        candidate = f"{base}.{alias.name}"
        found.add(candidate if candidate in modules else base)
  return {m for m in found if m == "lair" or m.startswith("lair.")} & set(modules)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: _imports(name, path, modules) - {name} for name, path in modules.items()}


def _reachable(graph, start: str) -> set[str]:
  seen, todo = set(), [start]
  while todo:
    for nxt in graph[todo.pop()]:
      if nxt not in seen:
        seen.add(nxt)
        todo.append(nxt)
  return seen


def _in(package: str, module: str) -> bool:
  return module == package or module.startswith(package + ".")


def test_the_graph_is_read_from_the_files(graph):
  assert "lair.train.loop" in graph and "lair.models.bert" in graph
  assert "lair.train.step" in graph["lair.train.loop"]
  assert "lair.models.bert" in graph["lair.models.retriever"]


def test_models_losses_and_data_import_neither_train_nor_evaluate(graph):
  low = [m for m in graph if _in("lair.models", m) or _in("lair.data", m)
         or m.startswith("lair.losses")]
  assert len(low) >= 8
  for module in low:
    bad = {m for m in _reachable(graph, module) if _in("lair.train", m) or _in("lair.evaluate", m)}
    assert not bad, f"{module} reaches {sorted(bad)}"


def test_evaluate_and_export_import_nothing_from_train(graph):
  for module in [m for m in graph if _in("lair.evaluate", m) or m == "lair.export"]:
    bad = {m for m in _reachable(graph, module) if _in("lair.train", m)}
    assert not bad, f"{module} reaches {sorted(bad)}"


def test_no_import_cycles(graph):
  # Tarjan's strongly connected components: any component of more than one module is a cycle.
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  assert not cycles, cycles
