"""Standing rules of the pack, checked on the source: layering, oracle isolation, safe loading, registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NON_RUNTIME_DIRS = {"tests", "bench", "scripts", ".venv", ".cache", "out", "example_workflows"}
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "server",
                 "execution", "node_helpers", "latent_preview"}


def _runtime_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not (set(p.relative_to(ROOT).parts[:-1]) & NON_RUNTIME_DIRS)
                  and not p.relative_to(ROOT).parts[0].startswith("."))


def _absolute_imports(path: Path) -> set[str]:
    """Top-level module names of every absolute import in the file, including ones inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _calls(path: Path) -> list[str]:
    """Dotted names of every call in the file (``print``, ``torch.load`` ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func, parts = node.func, []
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                parts.append(func.id)
                found.append(".".join(reversed(parts)))
    return found


def test_runtime_file_list_is_not_empty():
    files = {p.relative_to(ROOT).as_posix() for p in _runtime_files()}
    assert {"__init__.py", "loaders/detect.py", "nodes/inspect_nodes.py"} <= files


def test_core_never_imports_comfyui():
    offenders = {p.name: sorted(_absolute_imports(p) & COMFY_MODULES)
                 for p in (ROOT / "aiprod_core").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_loaders_never_import_comfyui():
    offenders = {p.name: sorted(_absolute_imports(p) & COMFY_MODULES) for p in (ROOT / "loaders").rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_runtime_never_imports_the_reference():
    offenders = [p for p in _runtime_files() if _absolute_imports(p) & {"ltx_core", "ltx_pipelines"}]
    assert not offenders


def test_runtime_has_no_print_pickle_torch_load_eval_exec():
    banned_calls = {"print", "torch.load", "eval", "exec", "pickle.load", "pickle.loads", "torch.jit.load"}
    problems = []
    for path in _runtime_files():
        problems += [f"{path.name}: {c}()" for c in _calls(path) if c in banned_calls]
        problems += [f"{path.name}: import {m}" for m in _absolute_imports(path) & {"pickle", "dill", "marshal"}]
    assert not problems


def test_node_mappings_are_static_literals_with_aiprod_ids():
    tree = ast.parse((ROOT / "__init__.py").read_text())
    literals = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            literals[node.targets[0].id] = node.value
    classes, names = literals["NODE_CLASS_MAPPINGS"], literals["NODE_DISPLAY_NAME_MAPPINGS"]
    assert isinstance(classes, ast.Dict) and isinstance(names, ast.Dict)
    class_ids = [k.value for k in classes.keys]
    assert class_ids == [k.value for k in names.keys]
    assert class_ids and all(re.fullmatch(r"AIPROD[A-Za-z0-9]+", i) for i in class_ids)
    assert all(isinstance(v, ast.Constant) and v.value.startswith("AIPROD ") for v in names.values)


def test_pack_imports_are_relative():
    pack_modules = {"aiprod_core", "loaders", "nodes"}
    offenders = [p for p in _runtime_files() if _absolute_imports(p) & pack_modules]
    assert not offenders


def _requirement_names(lines: list[str]) -> dict[str, str]:
    reqs = {}
    for raw in lines:
        line = raw.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~ \[]", line, maxsplit=1)[0].lower()
            reqs[name] = line.replace(" ", "")
    return reqs


def test_pyproject_and_requirements_in_step():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = _requirement_names(project["project"]["dependencies"])
    reqs = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert deps == reqs
    assert not {"torch", "torchvision", "torchaudio"} & deps.keys()
    assert "comfyui" not in project["project"]["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["project"]["version"])
    comfy = project["tool"]["comfy"]
    assert {"PublisherId", "DisplayName", "Icon"} <= comfy.keys()
    assert comfy["requires-comfyui"] == ">=0.3.64"


@pytest.mark.parametrize("path", ["README.md", "LICENSE", "Makefile", ".ci/run", "requirements.txt"])
def test_project_files_exist(path):
    assert (ROOT / path).is_file()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()
