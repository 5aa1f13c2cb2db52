"""Where the book is published: the repository URL and the site's base URL.

    python tools/site_config.py                        # print what _config.yml says now
    python tools/site_config.py --repository https://github.com/OWNER/NAME \\
                                --baseurl https://OWNER.github.io/NAME/
    python tools/site_config.py --readme               # README links, pyproject URLs

The Pages workflow runs the second form in its own checkout, with the repository it
runs in (``GITHUB_REPOSITORY``) and the Pages URL, so a fork publishes a book whose
Colab, download, repository, issues and edit links all point at the fork, with no edit.
The committed ``_config.yml`` holds :data:`PLACEHOLDER`, an address no GitHub account
can own (GitHub names cannot contain ``_``): a local build then links nowhere real, and
the reader notebooks' install cell says clearly that it does not know where to install
from, instead of cloning a stranger's repository.

``--readme`` rewrites, from ``_config.yml`` and ``_toc.yml``, the block of README.md
between the ``links:start`` and ``links:end`` markers (online book, badges, one
Open-in-Colab link per chapter) and ``[project.urls]`` in pyproject.toml; commit the
result once the real repository is known (``--repository URL --readme``).
``tests/test_book.py`` checks both agree with ``_config.yml``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "_config.yml"
PLACEHOLDER = "https://github.com/UNSET_OWNER/lnbn-book"
READER_BRANCH = (
    "notebooks"  # the branch the Pages workflow publishes the reader notebooks to
)
GITHUB = re.compile(
    r"^https://github\.com/([A-Za-z0-9_-]+)/([A-Za-z0-9._-]+?)(?:\.git)?/?$"
)


def config(path: Path = CONFIG) -> dict:
    return yaml.safe_load(path.read_text())


def repository_url(cfg: dict | None = None) -> str:
    """The repository the book is published from, or ``""`` when it is not set."""
    url = ((cfg or config()).get("repository") or {}).get("url") or ""
    return "" if url == PLACEHOLDER else url.rstrip("/")


def base_url(cfg: dict | None = None) -> str:
    """The online book's address with a trailing slash, or ``""`` when it is not set."""
    url = ((cfg or config()).get("html") or {}).get("baseurl") or ""
    return url if not url or url.endswith("/") else url + "/"


def github_parts(url: str) -> tuple[str, str]:
    """``(owner, name)`` of a GitHub repository URL; ValueError for anything else."""
    m = GITHUB.match(url)
    if not m:
        raise ValueError(
            f"expected a repository URL like https://github.com/OWNER/NAME, got {url!r}"
        )
    return m.group(1), m.group(2)


def colab_url(repo: str, notebook: str) -> str:
    """Colab's address of the published reader copy of ``notebook`` (book/X.ipynb)."""
    owner, name = github_parts(repo or PLACEHOLDER)
    return f"https://colab.research.google.com/github/{owner}/{name}/blob/{READER_BRANCH}/{notebook}"


def _set(text: str, section: str, key: str, value: str) -> str:
    """Set ``section.key`` in the YAML text, keeping comments (add it if missing)."""
    block = re.search(rf"^{section}:[^\n]*\n((?:[ \t]+[^\n]*\n|\n)*)", text, re.M)
    if not block:
        raise SystemExit(f"_config.yml has no top-level {section!r} section")
    body = block.group(1)
    line = re.compile(rf"^([ \t]+){key}:[^\n#]*(#[^\n]*)?$", re.M)
    if line.search(body):
        body = line.sub(
            lambda m: (
                f"{m.group(1)}{key}: {value}"
                + (f"  {m.group(2)}" if m.group(2) else "")
            ),
            body,
            1,
        )
    else:
        body = f"  {key}: {value}\n" + body
    return text[: block.start(1)] + body + text[block.end(1) :]


def configure(repository: str | None, baseurl: str | None, path: Path = CONFIG) -> None:
    text = path.read_text()
    if repository:
        github_parts(
            repository
        )  # fail early on anything that is not a GitHub repository
        text = _set(text, "repository", "url", repository.rstrip("/"))
    if baseurl:
        text = _set(
            text, "html", "baseurl", baseurl if baseurl.endswith("/") else baseurl + "/"
        )
    path.write_text(text)
    yaml.safe_load(text)  # still valid YAML


def chapters() -> list[tuple[str, str]]:
    """``(file, title)`` of every notebook in _toc.yml order, sub-pages included."""
    import json

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())

    def walk(entries):  # a chapter, then its sections (sub-pages), in order
        for c in entries:
            if "file" in c:
                yield c["file"]
            yield from walk(c.get("sections", []))

    files = [f for part in toc.get("parts", []) for f in walk(part.get("chapters", []))]
    out = []
    for f in files:
        nb = ROOT / f"{f}.ipynb"
        if nb.exists():
            first = "".join(
                json.loads(nb.read_text())["cells"][0]["source"]
            ).splitlines()[0]
            out.append((f"{f}.ipynb", first.lstrip("# ").strip()))
    return out


UNPUBLISHED = (
    "The online book, its PDF, the CI badges and a Colab link per chapter appear "
    "here once the book is published: the deploy workflow "
    "(`.github/workflows/pages.yml`) fills them in from the repository's name and "
    "commits them. Until then, build the book yourself (below)."
)


def readme_block(cfg: dict | None = None) -> str:
    """README's links: the online book, PDF, badges and Colab links, or, while no
    repository is configured, a sentence instead of placeholder links."""
    cfg = cfg or config()
    repo = repository_url(cfg)
    if not repo:
        return UNPUBLISHED
    owner, name = github_parts(repo)
    site = base_url(cfg) or f"https://{owner.lower()}.github.io/{name}/"
    actions = f"{repo}/actions/workflows"
    lines = [
        f"**Read the book online: <{site}>** (also as a [PDF]({site}lnbn-book.pdf)).",
        "",
        # main is tested by the deploy workflow (it calls test.yml before building);
        # test.yml itself runs on pull requests and other branches
        f"[![test, build and deploy (main)]({actions}/pages.yml/badge.svg?branch=main)]"
        f"({actions}/pages.yml)",
        f"[![test (pull requests)]({actions}/test.yml/badge.svg?event=pull_request)]"
        f"({actions}/test.yml)",
        "",
        "Run a chapter on Colab (executed copies, the library installed from the "
        "commit that built the book):",
        "",
    ]
    for nb, title in chapters():
        lines.append(
            f"- [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({colab_url(repo, nb)}) {title}"
        )
    return "\n".join(lines)


def install_block(cfg: dict | None = None) -> str:
    repo = repository_url(cfg or config())
    line = (
        f'pip install "git+{repo}"   # needs torch>=2.4 and matplotlib>=3.7'
        if repo
        else "pip install .   # in a clone of this repository; needs torch>=2.4 and "
        "matplotlib>=3.7"
    )
    return f"```bash\n{line}\n```"


def write_readme(path: Path = ROOT / "README.md") -> bool:
    """Rewrite README.md's generated blocks (links, install); return if it changed."""
    text = new = path.read_text()
    for name, block in (("links", readme_block()), ("install", install_block())):
        m = re.search(
            rf"(<!-- {name}:start[^>]*-->\n)(.*?)(\n?<!-- {name}:end -->)", new, re.S
        )
        if not m:
            raise SystemExit(
                f"README.md has no <!-- {name}:start --> ... <!-- {name}:end --> block"
            )
        new = (
            new[: m.end(1)]
            + block
            + "\n"
            + new[m.end(3) - len("<!-- " + name + ":end -->") :]
        )
    path.write_text(new)
    return new != text


def project_urls(repo: str) -> dict[str, str]:
    return {"Homepage": repo, "Source": repo, "Issues": f"{repo}/issues"}


def write_pyproject(path: Path = ROOT / "pyproject.toml") -> bool:
    """Point pyproject.toml's ``[project.urls]`` at the configured repository."""
    text = path.read_text()
    repo = repository_url() or PLACEHOLDER
    new = text
    for key, url in project_urls(repo).items():
        new = re.sub(
            rf'^{key} = "[^"]*"$', f'{key} = "{url}"', new, count=1, flags=re.M
        )
    path.write_text(new)
    return new != text


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--repository",
        help="https://github.com/OWNER/NAME (e.g. from GITHUB_REPOSITORY)",
    )
    ap.add_argument(
        "--baseurl",
        help="the online book's address (actions/configure-pages' base_url)",
    )
    ap.add_argument(
        "--readme", action="store_true", help="rewrite README.md's links block"
    )
    args = ap.parse_args(argv)
    if args.repository or args.baseurl:
        configure(args.repository, args.baseurl)
    if args.readme:
        print(
            "README.md links block",
            "rewritten" if write_readme() else "already current",
        )
        print(
            "pyproject.toml URLs",
            "rewritten" if write_pyproject() else "already current",
        )
    cfg = config()
    print(f"repository.url: {repository_url(cfg) or '(not set: ' + PLACEHOLDER + ')'}")
    print(f"html.baseurl:   {base_url(cfg) or '(not set)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
