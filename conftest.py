"""pytest: print each notebook's total run time (the sum of its cells) after the run."""
from collections import defaultdict


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    per_notebook: dict[str, float] = defaultdict(float)
    for reports in terminalreporter.stats.values():
        for rep in reports:
            path = getattr(rep, "nodeid", "").split("::")[0]
            if path.endswith(".ipynb") and getattr(rep, "when", None) in ("setup", "call", "teardown"):
                per_notebook[path] += getattr(rep, "duration", 0.0)
    if per_notebook:
        terminalreporter.section("notebook run times (s)")
        for path, seconds in sorted(per_notebook.items()):
            terminalreporter.write_line(f"{seconds:7.1f}  {path}")
