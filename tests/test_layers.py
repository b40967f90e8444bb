"""The domain does not import the web layer (STYLE.md, "Errors are domain facts").

Every module under ``ccserver/`` outside ``ccserver/web`` (and the test helpers of
``ccserver/testing``) is parsed, and each of its imports, at any depth (inside functions and
``TYPE_CHECKING`` blocks too), is compared with ``ccserver.web``.  The one exception is the
composition root, which builds the web service and hands it the domain's parts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ccserver

PACKAGE = Path(ccserver.__file__).parent
#: modules that may import the web layer, and why
COMPOSITION_ROOTS = {"ccserver/service.py": "builds the service tree, the web service included"}
EXEMPT_PACKAGES = ("ccserver/web/", "ccserver/testing/")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def web_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (the text of ``module``) that name ``ccserver.web`` or a
    module under it, relative imports resolved."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found += [name for name in names if name == "ccserver.web" or name.startswith("ccserver.web.")]
    return found


def test_the_check_sees_every_form_of_import() -> None:
    for source in (
        "import ccserver.web.api",
        "from ccserver.web import bodies",
        "from ccserver import web",
        "def f():\n    from ccserver.web.errors import write_json",
        "if TYPE_CHECKING:\n    import ccserver.web",
        "from .web import api",
    ):
        assert web_imports(source, "ccserver.tasks"), source
    assert web_imports("from ..web import api", "ccserver.auth.guard")
    assert web_imports("from . import web", "ccserver", is_package=True)
    for source in ("import ccserver.webhooks", "from ccserver import errors", "from .documents import to_client"):
        assert not web_imports(source, "ccserver.tasks"), source


def test_no_domain_module_imports_the_web_layer() -> None:
    checked = 0
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).as_posix()
        if relative.startswith(EXEMPT_PACKAGES) or relative in COMPOSITION_ROOTS:
            continue
        checked += 1
        found = web_imports(path.read_text(), _module_name(path), path.name == "__init__.py")
        if found:
            offenders[relative] = found
    assert offenders == {}
    assert checked > 30  # the walk did find the package
