"""Every committed results folder says, in a README, what made it (issue 34: a reader traces each number to the
command that produced it)."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


def test_every_results_folder_has_a_readme_naming_its_command():
    folders = sorted(p for p in RESULTS.iterdir() if p.is_dir())
    assert folders
    missing = [p.name for p in folders if not (p / "README.md").is_file()]
    assert not missing, f"results folders without a README: {missing}"
    silent = [p.name for p in folders if "python experiments/" not in (p / "README.md").read_text()]
    assert not silent, f"READMEs that do not name the command that made them: {silent}"
