"""The notebooks' committed form (no outputs, kernelspec, install cell, title, seed)
and the publishing tools: install cell, site config, reader notebooks, cache, workflows,
packaging."""

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def test_nbtool_check_passes():
    out = subprocess.run(
        [sys.executable, "tools/nbtool.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(path):
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert nb["cells"][0]["cell_type"] == "markdown" and first.startswith("# "), (
        "first cell must be the # Title"
    )
    code = "".join(
        "".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"
    )
    assert "lu.base_seed()" in code, (
        "every notebook takes its seed from LNBN_SEED via lu.base_seed()"
    )
    assert "set_num_threads(1)" in code
    assert "assert" in code
    assert "myst_nb" not in code, (
        "use lu.glue (works on Colab too), not myst_nb directly"
    )


def test_toc_lists_exactly_existing_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for v in node.values():
                yield from files(v)
        elif isinstance(node, list):
            for v in node:
                yield from files(v)

    listed = [toc["root"], *files(toc)]
    for f in listed:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), (
            f"{f} is in _toc.yml but missing"
        )
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in listed, f"{nb.name} exists but is not in _toc.yml"


# --- publishing: install cell, site config, reader copies, cache, workflows, packaging

sys.path.insert(0, str(ROOT / "tools"))
import exec_cache  # noqa: E402
import nbtool  # noqa: E402
import reader_notebooks  # noqa: E402
import site_config  # noqa: E402


def _run_install_cell(
    source: str, have_lnbn: bool, env: dict | None = None
) -> list[str]:
    """Execute the install cell as IPython would; return the %pip lines it ran."""
    from IPython.core.inputtransformer2 import TransformerManager

    code = TransformerManager().transform_cell(source)
    calls = []

    class FakeIPython:
        def run_line_magic(self, name, line, *args):
            calls.append(f"%{name} " + line.format_map(sys._getframe(1).f_globals))

    fake = (
        types.ModuleType("lnbn_utils") if have_lnbn else None
    )  # None: `import` raises
    environ = {k: v for k, v in os.environ.items() if k != "LNBN_INSTALL_FROM"} | (
        env or {}
    )
    with (
        mock.patch.dict(sys.modules, {"lnbn_utils": fake}),
        mock.patch.dict(os.environ, environ, clear=True),
    ):
        exec(code, {"get_ipython": FakeIPython})  # noqa: S102
    return calls


def test_install_cell_imports_first_and_installs_only_when_missing():
    committed = nbtool.colab_cell_source()
    assert "github.com" not in committed, "the committed cell names no repository"
    assert (
        _run_install_cell(committed, have_lnbn=True) == []
    )  # a local build, or a second run
    with pytest.raises(ImportError, match="does not say where the book is published"):
        _run_install_cell(
            committed, have_lnbn=False
        )  # a raw download, no repository known
    published = reader_notebooks.install_source(
        "https://github.com/octo/book", "a" * 40
    )
    assert _run_install_cell(published, have_lnbn=True) == []
    calls = _run_install_cell(published, have_lnbn=False)
    assert calls == [f"%pip install -q git+https://github.com/octo/book@{'a' * 40}"], (
        calls
    )
    calls = _run_install_cell(
        published, have_lnbn=False, env={"LNBN_INSTALL_FROM": "file:///tmp/clone"}
    )
    assert calls == [f"%pip install -q git+file:///tmp/clone@{'a' * 40}"], calls


def test_site_config_placeholder_and_rewrite(tmp_path):
    cfg = site_config.config()
    assert cfg["repository"]["url"] in (
        site_config.PLACEHOLDER,
        site_config.repository_url(cfg),
    )
    path = tmp_path / "_config.yml"
    path.write_text(site_config.CONFIG.read_text())
    site_config.configure(
        "https://github.com/octo/fork", "https://octo.github.io/fork", path
    )
    new = yaml.safe_load(path.read_text())
    assert site_config.repository_url(new) == "https://github.com/octo/fork"
    assert site_config.base_url(new) == "https://octo.github.io/fork/"
    assert new["execute"] == cfg["execute"] and new["sphinx"] == cfg["sphinx"], (
        "nothing else changes"
    )
    with pytest.raises(ValueError, match="expected a repository URL"):
        site_config.configure("git@github.com:octo/fork.git", None, path)
    assert (
        site_config.repository_url({"repository": {"url": site_config.PLACEHOLDER}})
        == ""
    )


def test_readme_and_pyproject_links_follow_config():
    readme = (ROOT / "README.md").read_text()
    repo = site_config.repository_url()
    assert site_config.readme_block() in readme and site_config.install_block() in (
        readme
    ), "run python tools/site_config.py --readme"
    # a visitor never meets a placeholder link
    assert "unset_owner" not in readme.lower()
    for nb, _title in site_config.chapters() if repo else []:
        assert site_config.colab_url(repo, nb) in readme
    repo = repo or site_config.PLACEHOLDER
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    assert urls == site_config.project_urls(repo), (
        "run python tools/site_config.py --readme"
    )


def test_book_config_reader_conventions():
    cfg = site_config.config()
    html = cfg["html"]
    assert (
        html["use_issues_button"]
        and html["use_edit_page_button"]
        and html["use_repository_button"]
    )
    assert (ROOT / cfg["logo"]).exists() and (ROOT / html["favicon"]).exists()
    assert cfg["sphinx"]["local_extensions"]["book_ext"] == "tools/"
    assert cfg["execute"]["execute_notebooks"] == "cache"


def test_exec_cache_key_tracks_library_seed_and_requirements(tmp_path):
    (tmp_path / "src" / "lnbn_utils").mkdir(parents=True)
    lib = tmp_path / "src" / "lnbn_utils" / "norms.py"
    lib.write_text("x = 1\n")
    (tmp_path / "requirements.txt").write_text("torch==2.13.0\n")
    key = exec_cache.cache_key(tmp_path, seed="0")
    assert exec_cache.cache_key(tmp_path, seed="0") == key
    assert exec_cache.cache_key(tmp_path, seed="1") != key
    lib.write_text("x = 2\n")
    assert exec_cache.cache_key(tmp_path, seed="0") != key
    (tmp_path / "requirements.txt").write_text("torch==2.14.0\n")
    key2 = exec_cache.cache_key(tmp_path, seed="0")
    (tmp_path / "requirements.txt").write_text(
        "torch==2.14.0\njieba==1  # build-only\n"
    )
    assert (
        exec_cache.cache_key(tmp_path, seed="0") == key2
    )  # not imported by a notebook
    (tmp_path / "requirements.txt").write_text("torch==2.14.0\n")
    build = tmp_path / "_build"
    (build / ".jupyter_cache").mkdir(parents=True)
    (build / ".jupyter_cache" / "global.db").write_text("old")
    (build / "jupyter_execute").mkdir()
    assert exec_cache.ensure(build, tmp_path, log=lambda m: None), (
        "an unkeyed cache is cleared"
    )
    assert (
        not (build / ".jupyter_cache" / "global.db").exists()
        and not (build / "jupyter_execute").exists()
    )
    assert not exec_cache.ensure(build, tmp_path, log=lambda m: None), (
        "a current cache is kept"
    )
    lib.write_text("x = 3\n")
    assert exec_cache.ensure(build, tmp_path, log=lambda m: None), (
        "a library change clears it"
    )
    assert exec_cache.cache_key(tmp_path, seed="0") != key2


class _Site:
    base = "https://octo.github.io/book/"
    anchors = {
        "fig-ch1-x": ("book/01_x.html", "Fig. 3"),
        "sec-a": ("book/00_a.html", "A section"),
        "equation-eq-1": ("book/00_a.html", "(2.1)"),
    }

    def url(self, page, anchor=""):
        return self.base + page + (f"#{anchor}" if anchor else "")

    def title(self, page):
        return {"book/00_two_norms.html": "Two ways to normalize"}.get(page, page)


BIB = r"""
@article{ba2016layer, title = {Layer Normalization}, year = {2016},
  author = {Ba, Jimmy Lei and Kiros, Jamie Ryan and Hinton, Geoffrey E.},
  url = {https://arxiv.org/abs/1607.06450}}
@inproceedings{ioffe2015batch, title = {Batch Normalization}, year = {2015},
  author = {Ioffe, Sergey and Szegedy, Christian}}
@inproceedings{kaiser2099x, title = {X}, year = {2099}, doi = {10.1000/xyz},
  author = {Kaiser, {\L}ukasz}}
"""


def _rewriter(tmp_path):
    (tmp_path / "refs.bib").write_text(BIB)
    bib = reader_notebooks.Bibliography(
        [tmp_path / "refs.bib"], "https://octo.github.io/book/bib.html"
    )
    glue = {
        "ratio": {"data": {"text/plain": "0.123456"}},
        "name": {"data": {"text/plain": "'LayerNorm'"}},
        "n": {"data": {"text/plain": "1024"}},
    }
    other = {"far": {"data": {"text/plain": "2.5"}}}
    return reader_notebooks.Rewriter(
        glue, lambda doc: other, bib, _Site(), "book/01_x.ipynb"
    )


def test_reader_markdown_fills_glue_citations_and_references(tmp_path):
    rw = _rewriter(tmp_path)
    out = rw.markdown(
        "(sec-label)=\n## Result\n\nThe ratio is {glue:text}`ratio:.2f` for "
        "{glue:text}`name` over {glue:text}`n:,d` tokens "
        "({glue:text}`02_y.ipynb::far:.1f`), {glue}`n`.\n"
        "LayerNorm {cite:p}`ba2016layer` and {cite:t}`ioffe2015batch`; both "
        "{cite:p}`ba2016layer,ioffe2015batch`; {cite:t}`kaiser2099x`.\n"
        "See {doc}`00_two_norms`, {numref}`fig-ch1-x`, {ref}`the section <sec-a>`, "
        "{math}`x^2`, {eq}`eq-1`.\n\n"
        ":::{note}\nA remark.\n:::\n\n$$\ny = x\n$$ (eq-1)\n"
    )
    assert reader_notebooks.check(
        {"cells": [{"cell_type": "markdown", "source": out}]}
    ) == [
        "notebook: expected one install cell (tag 'colab-install'), found 0",
        "notebook: not executed (a code cell has no execution count)",
        "notebook: no outputs at all",
    ], out
    assert "The ratio is 0.12 for LayerNorm over 1,024 tokens (2.5), 1024." in out
    assert "LayerNorm ([Ba et al., 2016](https://arxiv.org/abs/1607.06450))" in out
    assert (
        "[Ioffe and Szegedy (2015)](https://octo.github.io/book/bib.html)" in out
    )  # no URL
    assert "[Kaiser (2099)](https://doi.org/10.1000/xyz)" in out
    assert (
        "([Ba et al., 2016](https://arxiv.org/abs/1607.06450); "
        "[Ioffe and Szegedy, 2015](" in out
    )
    assert (
        "[Two ways to normalize](https://octo.github.io/book/book/00_two_norms.html)"
        in out
    )
    assert "[Fig. 3](https://octo.github.io/book/book/01_x.html#fig-ch1-x)" in out
    assert "[the section](https://octo.github.io/book/book/00_a.html#sec-a)" in out
    assert "[(2.1)](https://octo.github.io/book/book/00_a.html#equation-eq-1)" in out
    assert "$x^2$" in out and "> **Note**" in out and "> A remark." in out
    assert "(sec-label)=" not in out and "(eq-1)" not in out


def test_reader_check_flags_raw_myst_and_unknown_names(tmp_path):
    rw = _rewriter(tmp_path)
    with pytest.raises(KeyError, match="missing_name"):
        rw.markdown("{glue:text}`missing_name:.2f`")
    with pytest.raises(KeyError, match="nokey2099"):
        rw.markdown("{cite:p}`nokey2099`")
    raw = {"cells": [{"cell_type": "markdown", "source": "x {glue:text}`a:.2f` y"}]}
    assert any("raw {glue}" in p for p in reader_notebooks.check(raw))
    raw = {"cells": [{"cell_type": "markdown", "source": "x {cite:p}`a` y"}]}
    assert any("raw {cite}" in p for p in reader_notebooks.check(raw))
    raw = {"cells": [{"cell_type": "markdown", "source": "```{figure} a.png\nx\n```"}]}
    assert any("MyST directive" in p for p in reader_notebooks.check(raw))


def _workflow(name):
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


# Lowest major of each action that runs on Node 24 (GitHub retired Node 20 in 2026).
NODE24_MAJORS = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/cache": 5,
    "actions/upload-artifact": 6,
    "actions/upload-pages-artifact": 5,
    "actions/deploy-pages": 5,
    "actions/configure-pages": 6,
}


def test_workflows_deploy_after_tests_on_node24_actions_with_cpu_torch():
    pages, test = _workflow("pages.yml"), _workflow("test.yml")
    assert "workflow_call" in test[True] or "workflow_call" in test.get(
        "on", {}
    )  # `on` parses as True
    assert pages["jobs"]["test"]["uses"] == "./.github/workflows/test.yml"
    assert pages["jobs"]["build"]["needs"] == "test"
    assert set(pages["jobs"]["deploy"]["needs"]) == {"test", "build"}
    for wf in (pages, test):
        assert "download.pytorch.org/whl/cpu" in wf["env"]["PIP_EXTRA"]
        for job in wf["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    action, _, ref = step["uses"].partition("@")
                    assert action in NODE24_MAJORS, (
                        f"unknown action {action}: add its Node-24 major"
                    )
                    assert (
                        int(ref.lstrip("v").split(".")[0]) >= NODE24_MAJORS[action]
                    ), step["uses"]
                if "make " in step.get("run", ""):
                    assert 'PIP_EXTRA="$PIP_EXTRA"' in step["run"], step["run"]
    uploads = [
        s
        for j in test["jobs"].values()
        for s in j["steps"]
        if "upload-artifact" in s.get("uses", "")
    ]
    assert uploads and uploads[0]["if"] == "failure()"
    # what the book claims CI runs: a second seed, the browser and Colab checks, with
    # a CJK font installed; the PDF build installs the font too
    runs = " ".join(s.get("run", "") for j in test["jobs"].values() for s in j["steps"])
    for target in (
        "make test ",
        "make test-seeds SEEDS=1",
        "make test-browser",
        "make test-colab ",
        "make test-colab-versions",
        "fonts-noto-cjk",
    ):
        assert target in runs, f"test.yml does not run {target!r}"
    build = " ".join(s.get("run", "") for s in pages["jobs"]["build"]["steps"])
    assert "fonts-noto-cjk" in build and "make pdf" in build


def test_nothing_defaults_to_an_index_this_machine_cannot_reach():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^PIP_EXTRA \?=\s*$", makefile, re.M), (
        "PIP_EXTRA must be empty by default"
    )
    for name in (
        "Makefile",
        ".ci/run",
        "requirements.txt",
        "requirements-browser.txt",
        "requirements-lint.txt",
    ):
        code = [
            ln
            for ln in (ROOT / name).read_text().splitlines()
            if not ln.lstrip().startswith("#")
        ]
        assert not any("download.pytorch.org" in ln for ln in code), (
            f"{name} reaches for the PyTorch index"
        )


def test_packaging_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert "torch>=2.4" in project["dependencies"], (
        "nn.RMSNorm / F.rms_norm need torch 2.4"
    )
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    floor = re.search(r"setuptools>=(\d+)", " ".join(meta["build-system"]["requires"]))
    assert floor and int(floor.group(1)) >= 77, (
        "license = 'MIT' (PEP 639) needs setuptools >= 77"
    )
    assert project["dynamic"] == ["version"] and "version" not in project
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "lnbn_utils.__version__"
    }
    init = (ROOT / "src" / "lnbn_utils" / "__init__.py").read_text()
    assert re.search(r'^__version__ = "\d+\.\d+\.\d+"$', init, re.M)


def test_every_bibliography_entry_links_somewhere():
    """Every entry has a DOI or URL (the reader notebooks link citations to it)."""
    from pybtex.database import parse_file

    entries = parse_file(str(ROOT / "book" / "references.bib")).entries
    missing = [
        k
        for k, e in entries.items()
        if not ({"doi", "url"} & {f.lower() for f in e.fields})
    ]
    assert not missing, f"bibliography entries without a DOI or URL: {missing}"


def test_page_description_is_the_first_real_paragraph():
    import book_ext
    from docutils.core import publish_doctree

    doctree = publish_doctree(
        "Title\n=====\n\nShort.\n\n"
        + "The article's first claim is tested here, with a control and an interval. "
        * 5
    )
    desc = book_ext._description(doctree, limit=120)
    assert desc.startswith("The article's first claim") and desc.endswith("…")
    assert len(desc) <= 120


def test_reader_literalinclude_shows_the_named_object(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import os\n\n\n@staticmethod\ndef f(x):\n    return x\n\n\ny = 1\n")
    got = reader_notebooks.literal_include(src, {"pyobject": "f"})
    assert got == ["```python", "@staticmethod", "def f(x):", "    return x", "```"]
    whole = reader_notebooks.literal_include(src, {})
    assert whole[1] == "import os" and whole[-1] == "```"
