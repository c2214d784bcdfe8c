"""The libvirt adapter's boundaries: no Django inside it, no libvirt outside it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
VIRT = REPO_ROOT / "hosts" / "virt"
VIRT_MODULES = sorted(
    "hosts.virt" + ("" if path.stem == "__init__" else f".{path.stem}")
    for path in VIRT.glob("*.py")
)
# Everything the project's own code lives in; third-party code under .venv is not ours.
SKIP_DIRS = {".venv", "node_modules", "var", "artifacts", ".git"}


def test_every_adapter_module_is_listed() -> None:
    assert {"hosts.virt", "hosts.virt.hypervisor", "hosts.virt.domain_xml",
            "hosts.virt.storage", "hosts.virt.domains"} <= set(VIRT_MODULES)


@pytest.mark.parametrize("module", VIRT_MODULES)
def test_adapter_module_imports_no_django(module: str) -> None:
    code = (f"import sys, {module}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"


def _imports_libvirt(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[0] == "libvirt" for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "libvirt":
                return True
    return False


def test_only_the_adapter_imports_libvirt() -> None:
    outside = [
        str(path.relative_to(REPO_ROOT))
        for path in REPO_ROOT.rglob("*.py")
        if not SKIP_DIRS & set(path.relative_to(REPO_ROOT).parts)
        and VIRT not in path.parents
        and path.parts[len(REPO_ROOT.parts)] != "tests"
        and _imports_libvirt(path)
    ]
    assert outside == []
